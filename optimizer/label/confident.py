"""Label errors by confident learning (Northcutt, Jiang and Chuang, "Confident Learning:
Estimating Uncertainty in Dataset Labels", JAIR 70, 2021).

Given labels ``y~`` and out-of-sample class probabilities ``p`` (N x C):

1. per-class thresholds ``t_j``: the mean self-confidence ``p_j`` over the rows labelled j
   (:func:`confident_thresholds`);
2. the confident joint ``C[i][j]``: rows labelled i whose probability of class j reaches
   ``t_j`` (the most probable such class when several do) (:func:`confident_joint`), then
   calibrated so that row i sums to the number of rows labelled i and the whole to N;
3. ``Q = C / N`` estimates the joint distribution of given and true labels; the noise rate
   of each off-diagonal cell says how many rows to prune from it;
4. pruning by noise rate: from the rows labelled i, flag the ``N * Q[i][j]`` with the largest
   margin ``p_j - p_i`` for every ``j != i``, keeping at least ``min_per_class`` rows of each
   class (:func:`find_label_issues`). Rows whose given label is also the model's prediction
   are never flagged.

Flagged rows are ranked by a label-quality score (:func:`label_quality_scores`: self-confidence
``p_{y~}``, normalized margin ``p_{y~} - max_{k != y~} p_k``, or confidence-weighted entropy),
lowest first. The paper's other filters (``prune_by_class``, ``both``, ``confident_learning``
i.e. the off-diagonals of C, and ``argmax``) are available through ``method``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.label.exceptions import LabelDataError
from optimizer.label.uncertainty import check_probabilities, entropy

METHODS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "argmax")
QUALITY_SCORES = ("self_confidence", "normalized_margin", "confidence_weighted_entropy")
# Rows tie with a threshold they equal up to float rounding (probabilities from float32 math).
_EPS = 1e-6


def check_labels(labels: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated (labels as int64, probabilities as float64) of matching length."""
    probs = check_probabilities(probs)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise LabelDataError(f"labels must be one-dimensional, got shape {labels.shape}")
    if len(labels) != len(probs):
        raise LabelDataError(f"{len(labels)} labels for {len(probs)} rows of probabilities")
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            raise LabelDataError(f"labels must be class indices, got {labels.dtype}")
    num_classes = probs.shape[1]
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        bad = int(labels[np.argmax(outside)])
        raise LabelDataError(f"label {bad} is outside the class set 0..{num_classes - 1}")
    return labels.astype(np.int64), probs


def confident_thresholds(labels: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Per class j, the mean of ``p_j`` over the rows labelled j (``inf`` for an unused class:
    no row can be confidently counted into a class that no row carries)."""
    labels, probs = check_labels(labels, probs)
    num_classes = probs.shape[1]
    counts = np.bincount(labels, minlength=num_classes)
    sums = np.zeros(num_classes)
    np.add.at(sums, labels, probs[np.arange(len(labels)), labels])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def _true_label_guess(probs: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: whether some class reaches its threshold, and the most probable such class."""
    confident = probs >= thresholds[None, :] - _EPS
    any_confident = confident.any(axis=1)
    guess = np.where(confident, probs, -1.0).argmax(axis=1)
    return any_confident, guess


def confident_joint(
    labels: np.ndarray,
    probs: np.ndarray,
    *,
    thresholds: np.ndarray | None = None,
    calibrate: bool = True,
) -> np.ndarray:
    """The C x C confident joint: rows are given labels, columns the confidently guessed true
    labels. Calibrated (rows sum to the label counts, the whole to N, rounded to integers
    preserving row totals) unless ``calibrate=False``. Every diagonal entry is at least 1."""
    labels, probs = check_labels(labels, probs)
    num_classes = probs.shape[1]
    if thresholds is None:
        thresholds = confident_thresholds(labels, probs)
    confident, guess = _true_label_guess(probs, thresholds)
    joint = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(joint, (labels[confident], guess[confident]), 1)
    # A class nobody is confidently counted into still has at least one correct example.
    np.fill_diagonal(joint, np.maximum(joint.diagonal(), 1))
    if not calibrate:
        return joint
    return calibrate_joint(joint, labels, num_classes)


def calibrate_joint(joint: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Scale each row of ``joint`` to the number of rows with that given label, then the whole
    to N, and round to integers keeping each row's total (Northcutt et al. 2021, eq. 2)."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    rows = joint.sum(axis=1, keepdims=True).astype(np.float64)
    scaled = joint / np.maximum(rows, 1) * counts[:, None]
    scaled = scaled / max(scaled.sum(), 1e-300) * counts.sum()
    return round_preserving_row_totals(scaled)


def round_preserving_row_totals(matrix: np.ndarray) -> np.ndarray:
    """Round each row to integers that keep the row's (rounded) total.

    Every cell is rounded to the nearest integer (halves to even); when the rounded row misses
    its total by d, the |d| cells that rounding moved least in the needed direction move by
    one (largest ``x - round(x)`` up, smallest down). Among equal fractional parts the order
    of numpy's default argsort decides. This is the convention of cleanlab's
    ``round_preserving_sum``, adopted so that both compute the same joint from the same
    probabilities: the choice among ties is arbitrary, and an arbitrary difference would only
    make the two disagree on a few rows for no reason.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    result = np.round(matrix)
    for i, row in enumerate(matrix):
        target = np.round(row.sum())
        while abs(result[i].sum() - target) > 1e-6:
            diff = target - result[i].sum()
            step = 1.0 if diff > 0 else -1.0
            changes = min(int(round(abs(diff))), len(row))
            order = np.argsort(row - result[i])
            chosen = order[::-1][:changes] if step > 0 else order[:changes]
            result[i, chosen] += step
    return result.astype(np.int64)


def estimate_noise(
    joint: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From a calibrated confident joint: ``Q`` (joint of given and true labels), the prior
    of true labels ``p(y*)`` and the noise matrix ``p(y~ = i | y* = j)`` (columns sum to 1)."""
    joint = np.asarray(joint, dtype=np.float64)
    q = joint / max(joint.sum(), 1e-300)
    prior = q.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        noise = np.where(prior > 0, q / np.where(prior > 0, prior, 1.0), 0.0)
    return q, prior, noise


def label_quality_scores(
    labels: np.ndarray, probs: np.ndarray, method: str = "self_confidence"
) -> np.ndarray:
    """Per row, how likely its given label is correct (higher: more likely; in [0, 1]).

    ``self_confidence``: ``p_{y~}``; ``normalized_margin``: ``(p_{y~} - max_{k != y~} p_k + 1)
    / 2``; ``confidence_weighted_entropy``: with ``H`` the entropy normalised by ``log C``,
    ``1 / (1 + log(1 + H / p_{y~}))`` (confident and certain: near 1).
    """
    labels, probs = check_labels(labels, probs)
    rows = np.arange(len(labels))
    self_conf = probs[rows, labels]
    if method == "self_confidence":
        return self_conf
    if method == "normalized_margin":
        others = probs.copy()
        others[rows, labels] = -np.inf
        best_other = others.max(axis=1) if probs.shape[1] > 1 else np.zeros(len(labels))
        return (self_conf - best_other + 1.0) / 2.0
    if method == "confidence_weighted_entropy":
        num_classes = probs.shape[1]
        if num_classes == 1:
            return np.ones(len(labels))
        h = entropy(probs) / np.log(num_classes)  # normalised to [0, 1]
        score = np.log(np.maximum(h, 1e-300) / np.maximum(self_conf, 1e-300) + 1.0)
        # log(H/p + 1) >= 0 grows as the label gets worse: map it into (0, 1], higher = better.
        return 1.0 / (1.0 + score)
    raise LabelDataError(
        f"unknown label-quality score {method!r}: expected one of {QUALITY_SCORES}"
    )


def _keep_at_least(prune: np.ndarray, labels_count: np.ndarray, n: int) -> np.ndarray:
    """Shrink the off-diagonal prune counts of each given label so that at least ``n`` of its
    rows (all of them when it has fewer) stay unflagged."""
    prune = prune.copy()
    for i in range(len(prune)):
        allowed = max(int(labels_count[i]) - n, 0)
        off = prune[i].copy()
        off[i] = 0
        total = int(off.sum())
        if total > allowed:
            scaled = off * (allowed / total)
            row = round_preserving_row_totals(scaled[None, :])[0]
            prune[i] = row
            prune[i, i] = labels_count[i] - row.sum()
    return prune


@dataclass(frozen=True)
class LabelIssues:
    """Result of :func:`find_label_issues`.

    ``mask``: per row, flagged as a likely label error; ``ranked``: flagged rows, most likely
    wrong first (lowest quality); ``quality``: every row's label-quality score; ``suggested``:
    per row, the most probable class other than the given one when flagged, else the given
    label; ``joint``: the calibrated confident joint; ``noise_matrix``: ``p(y~|y*)``;
    ``thresholds``: the per-class confidence thresholds.
    """

    mask: np.ndarray
    ranked: np.ndarray
    quality: np.ndarray
    suggested: np.ndarray
    joint: np.ndarray
    noise_matrix: np.ndarray
    thresholds: np.ndarray
    method: str
    score: str

    @property
    def num_issues(self) -> int:
        """Number of flagged rows."""
        return int(self.mask.sum())

    @property
    def estimated_noise_rate(self) -> float:
        """Share of rows whose given label the confident joint estimates to be wrong."""
        total = self.joint.sum()
        return float((total - np.trace(self.joint)) / total) if total else 0.0


def find_label_issues(
    labels: np.ndarray,
    probs: np.ndarray,
    *,
    method: str = "prune_by_noise_rate",
    score: str = "self_confidence",
    min_per_class: int = 1,
) -> LabelIssues:
    """Flag likely mislabeled rows by confident learning (see the module docstring).

    ``probs`` should be out-of-sample (cross-validated) probabilities: a model's probabilities
    on its own training rows are overconfident in their labels and hide errors.
    """
    if method not in METHODS:
        raise LabelDataError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    if score not in QUALITY_SCORES:
        raise LabelDataError(
            f"unknown score {score!r}: expected one of {', '.join(QUALITY_SCORES)}"
        )
    labels, probs = check_labels(labels, probs)
    n, num_classes = probs.shape
    thresholds = confident_thresholds(labels, probs)
    joint = confident_joint(labels, probs, thresholds=thresholds)
    _, _, noise_matrix = estimate_noise(joint)
    counts = np.bincount(labels, minlength=num_classes)
    prune = _keep_at_least(joint, counts, min_per_class)
    rows = np.arange(n)

    by_noise = np.zeros(n, dtype=bool)
    by_class = np.zeros(n, dtype=bool)
    if method in ("prune_by_noise_rate", "both"):
        for i in range(num_classes):
            members = np.flatnonzero(labels == i)
            if len(members) <= min_per_class:
                continue
            for j in range(num_classes):
                k = int(prune[i, j]) if j != i else 0
                if k > 0:
                    margin = probs[members, j] - probs[members, i]
                    by_noise[members[np.argsort(-margin, kind="stable")[:k]]] = True
    if method in ("prune_by_class", "both"):
        self_conf = probs[rows, labels]
        for i in range(num_classes):
            members = np.flatnonzero(labels == i)
            if len(members) <= min_per_class:
                continue
            k = int(prune[i].sum() - prune[i, i])
            if k > 0:
                by_class[members[np.argsort(self_conf[members], kind="stable")[:k]]] = True
    if method == "prune_by_noise_rate":
        mask = by_noise
    elif method == "prune_by_class":
        mask = by_class
    elif method == "both":
        mask = by_noise & by_class
    elif method == "confident_learning":
        confident, guess = _true_label_guess(probs, thresholds)
        mask = confident & (guess != labels)
    else:  # argmax
        mask = probs.argmax(axis=1) != labels
    # A row the model predicts as its given label is not a confident error (ties favour it).
    favoured = probs.copy()
    favoured[rows, labels] += _EPS
    mask = mask & (favoured.argmax(axis=1) != labels)

    quality = label_quality_scores(labels, probs, score)
    flagged = np.flatnonzero(mask)
    ranked = flagged[np.argsort(quality[flagged], kind="stable")]
    others = probs.copy()
    others[rows, labels] = -np.inf
    suggested = np.where(mask, others.argmax(axis=1), labels) if num_classes > 1 else labels
    return LabelIssues(
        mask=mask,
        ranked=ranked,
        quality=quality,
        suggested=suggested,
        joint=joint,
        noise_matrix=noise_matrix,
        thresholds=thresholds,
        method=method,
        score=score,
    )
