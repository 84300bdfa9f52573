"""Aggregating crowd labels: from (item, annotator, label) records to one label per item.

- :func:`majority_vote`: the most frequent label (ties broken at random, seeded);
- :func:`dawid_skene`: Dawid and Skene (1979), "Maximum likelihood estimation of observer
  error-rates using the EM algorithm": a class prior and one confusion matrix per annotator,
  fitted by expectation-maximisation; by default a Bayesian (MAP) variant whose Dirichlet
  prior pulls each confusion row towards the annotator's one-coin row, with the prior's
  strength estimated by empirical Bayes, and a ``model="one-coin"`` option;
- :func:`mace`: MACE (Hovy, Berg-Kirkpatrick, Vaswani and Hovy 2013, "Learning whom to trust
  with MACE"): each annotator answers knowingly with probability ``theta`` (their competence)
  and otherwise draws from a personal spam distribution; fitted by EM.

Each returns an :class:`Aggregation`: labels, confidences (posterior probability of the chosen
label), the posterior over classes and per-annotator skill estimates. A model can join the
annotators (:meth:`CrowdLabels.with_annotator`), so its votes are weighed by the skill the
aggregation estimates for it like anyone else's.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import gammaln

from optimizer.label.exceptions import LabelDataError

METHODS = ("majority_vote", "dawid_skene", "mace")
_ITEM_COLUMNS = ("item", "task", "item_id", "task_id")
_ANNOTATOR_COLUMNS = ("annotator", "worker", "annotator_id", "worker_id")
_LABEL_COLUMNS = ("label", "answer")


@dataclass(frozen=True)
class CrowdLabels:
    """Crowd records encoded as integer arrays (one entry per record) and the names behind."""

    items: np.ndarray
    annotators: np.ndarray
    labels: np.ndarray
    item_names: tuple[Any, ...]
    annotator_names: tuple[Any, ...]
    class_names: tuple[str, ...]

    @property
    def num_items(self) -> int:
        """Number of distinct items."""
        return len(self.item_names)

    @property
    def num_annotators(self) -> int:
        """Number of distinct annotators."""
        return len(self.annotator_names)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_records(
        cls,
        records: Iterable[Sequence[Any]],
        *,
        class_names: Sequence[Any] | None = None,
        num_classes: int | None = None,
    ) -> CrowdLabels:
        """Encode ``(item, annotator, label)`` records.

        Labels are class indices (``num_classes`` sets the class count, else the largest index
        plus one) or names: of ``class_names`` when given (others are errors), else every name
        seen, sorted.
        """
        rows = [tuple(r) for r in records]
        if not rows:
            raise LabelDataError("no crowd records")
        bad = next((k for k, r in enumerate(rows) if len(r) != 3), None)
        if bad is not None:
            raise LabelDataError(
                f"record {bad} has {len(rows[bad])} fields: expected (item, annotator, label)"
            )
        items, annotators, raw = zip(*rows)
        item_names, item_idx = _encode(items)
        ann_names, ann_idx = _encode(annotators)
        labels, names = _encode_classes(list(raw), class_names, num_classes)
        return cls(item_idx, ann_idx, labels, item_names, ann_names, names)

    @classmethod
    def read_csv(
        cls,
        path: str | os.PathLike,
        *,
        item_column: str | None = None,
        annotator_column: str | None = None,
        label_column: str | None = None,
        class_names: Sequence[Any] | None = None,
        num_classes: int | None = None,
    ) -> CrowdLabels:
        """Records from a CSV file with a header. Columns default to item/task,
        annotator/worker and label/answer."""
        path = Path(path)
        if not path.is_file():
            raise LabelDataError(f"{path}: no such file")
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            header = [h.strip() for h in next(reader, [])]
            if not header:
                raise LabelDataError(f"{path}: empty file (expected a header line)")
            picks = [
                _column(path, header, item_column, _ITEM_COLUMNS, "item"),
                _column(path, header, annotator_column, _ANNOTATOR_COLUMNS, "annotator"),
                _column(path, header, label_column, _LABEL_COLUMNS, "label"),
            ]
            index = [header.index(c) for c in picks]
            records = []
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise LabelDataError(
                        f"{path}:{line}: {len(row)} fields, the header has {len(header)}"
                    )
                records.append(tuple(row[i].strip() for i in index))
        if not records:
            raise LabelDataError(f"{path}: no records after the header")
        return cls.from_records(records, class_names=class_names, num_classes=num_classes)

    def with_annotator(
        self, name: Any, item_names: Sequence[Any], labels: Sequence[int] | np.ndarray
    ) -> CrowdLabels:
        """These records plus one annotator ``name`` (e.g. a model) labelling ``item_names``
        with class indices ``labels``. Items new to the records are added."""
        labels = np.asarray(labels)
        if len(labels) != len(item_names):
            raise LabelDataError(f"{len(labels)} labels for {len(item_names)} items")
        if labels.dtype.kind not in "iu":
            raise LabelDataError("the added annotator's labels must be class indices")
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise LabelDataError(f"added label outside the class set 0..{self.num_classes - 1}")
        if name in self.annotator_names:
            raise LabelDataError(f"annotator {name!r} already labelled these items")
        lookup = {str(n): k for k, n in enumerate(self.item_names)}
        names = list(self.item_names)
        idx = []
        for item in item_names:
            key = str(item)
            if key not in lookup:
                lookup[key] = len(names)
                names.append(item)
            idx.append(lookup[key])
        return CrowdLabels(
            np.concatenate([self.items, np.asarray(idx, dtype=np.int64)]),
            np.concatenate(
                [self.annotators, np.full(len(labels), self.num_annotators, dtype=np.int64)]
            ),
            np.concatenate([self.labels, labels.astype(np.int64)]),
            tuple(names),
            (*self.annotator_names, name),
            self.class_names,
        )


def _column(path: Path, header: list[str], given: str | None, defaults, what: str) -> str:
    if given is not None:
        if given not in header:
            raise LabelDataError(
                f"{path}: missing {what} column {given!r} (columns: {', '.join(header)})"
            )
        return given
    for name in defaults:
        if name in header:
            return name
    raise LabelDataError(
        f"{path}: missing {what} column (looked for {', '.join(defaults)}; columns: "
        f"{', '.join(header)}); name it"
    )


def _encode(values: Sequence[Any]) -> tuple[tuple[Any, ...], np.ndarray]:
    """Names in first-seen order and each value's index (compared as strings)."""
    index: dict[str, int] = {}
    names: list[Any] = []
    codes = np.empty(len(values), dtype=np.int64)
    for k, v in enumerate(values):
        key = str(v)
        if key not in index:
            index[key] = len(names)
            names.append(v)
        codes[k] = index[key]
    return tuple(names), codes


def _encode_classes(raw: list[Any], class_names, num_classes) -> tuple[np.ndarray, tuple[str, ...]]:
    if class_names is not None:
        lookup = {str(c): k for k, c in enumerate(class_names)}
        unknown = sorted({str(v) for v in raw} - set(lookup))
        if unknown:
            raise LabelDataError(
                f"label {unknown[0]!r} is not in the class set ({', '.join(map(str, class_names))})"
            )
        return np.array([lookup[str(v)] for v in raw], dtype=np.int64), tuple(map(str, class_names))
    as_text = [str(v).strip() for v in raw]
    if all(t.lstrip("-").isdigit() for t in as_text):
        labels = np.array([int(t) for t in as_text], dtype=np.int64)
        if labels.min() < 0:
            raise LabelDataError(f"label {int(labels.min())} is negative: not a class index")
        count = int(labels.max()) + 1 if num_classes is None else int(num_classes)
        if labels.max() >= count:
            raise LabelDataError(
                f"label {int(labels.max())} is outside the class set 0..{count - 1}"
            )
        return labels, tuple(str(k) for k in range(count))
    names = tuple(sorted(set(as_text)))
    lookup = {c: k for k, c in enumerate(names)}
    return np.array([lookup[t] for t in as_text], dtype=np.int64), names


@dataclass(frozen=True)
class Aggregation:
    """One label per item: ``labels`` (class indices), ``posteriors`` (items x classes),
    ``skills`` per annotator (majority vote: agreement with the result; Dawid-Skene: estimated
    accuracy ``sum_c prior_c * confusion[c, c]``; MACE: competence ``theta``), plus the
    fitted ``confusions`` (annotators x true x given, Dawid-Skene) or ``spam`` distributions
    (annotators x classes, MACE), and EM's iteration count and convergence."""

    method: str
    labels: np.ndarray
    posteriors: np.ndarray
    skills: np.ndarray
    crowd: CrowdLabels
    confusions: np.ndarray | None = None
    spam: np.ndarray | None = None
    prior: np.ndarray | None = None
    iterations: int = 0
    converged: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def confidences(self) -> np.ndarray:
        """Posterior probability of each item's chosen label."""
        return self.posteriors[np.arange(len(self.labels)), self.labels]

    def label_names(self) -> list[str]:
        """The chosen labels by class name."""
        return [self.crowd.class_names[k] for k in self.labels]


def _votes(crowd: CrowdLabels) -> np.ndarray:
    counts = np.zeros((crowd.num_items, crowd.num_classes))
    np.add.at(counts, (crowd.items, crowd.labels), 1.0)
    return counts


def _argmax_random_ties(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.random(scores.shape)
    best = scores >= scores.max(axis=1, keepdims=True) - 1e-12
    return np.where(best, noise, -1.0).argmax(axis=1)


def _agreement(crowd: CrowdLabels, labels: np.ndarray) -> np.ndarray:
    hits = np.zeros(crowd.num_annotators)
    totals = np.bincount(crowd.annotators, minlength=crowd.num_annotators).astype(float)
    np.add.at(hits, crowd.annotators, (labels[crowd.items] == crowd.labels).astype(float))
    return hits / np.maximum(totals, 1)


def majority_vote(crowd: CrowdLabels, *, seed: int = 0) -> Aggregation:
    """The most frequent label per item; the posterior is the vote share."""
    counts = _votes(crowd)
    labels = _argmax_random_ties(counts, np.random.default_rng(seed))
    posteriors = counts / counts.sum(axis=1, keepdims=True)
    return Aggregation("majority_vote", labels, posteriors, _agreement(crowd, labels), crowd)


def _normalise_log(logp: np.ndarray) -> np.ndarray:
    logp = logp - logp.max(axis=1, keepdims=True)
    p = np.exp(logp)
    return p / p.sum(axis=1, keepdims=True)


#: Dawid-Skene's annotator models: a confusion matrix per annotator (shrunk towards one-coin by
#: ``prior_strength``), or one accuracy per annotator with errors spread uniformly.
DS_MODELS = ("confusion", "one-coin")
#: Where Dawid-Skene's EM starts: the majority vote's vote shares, or a one-coin weighted vote.
DS_INITS = ("majority", "weighted")


def dawid_skene(
    crowd: CrowdLabels,
    *,
    model: str = "confusion",
    prior_strength: float | str = "auto",
    init: str = "weighted",
    max_iter: int = 500,
    tol: float = 1e-6,
    smoothing: float = 0.01,
    seed: int = 0,
) -> Aggregation:
    """Dawid-Skene EM: class prior ``pi`` and per-annotator confusion matrices
    ``theta[a, true, given]``.

    ``model="confusion"`` (default) fits one confusion matrix per annotator by maximum a
    posteriori EM. Each row has a Dirichlet prior centred on the annotator's *one-coin*
    matrix (their estimated accuracy on the diagonal, the rest spread evenly over the other
    classes) with ``prior_strength`` pseudo-counts per row. A row seen a few dozen times is
    pulled towards one-coin instead of fitting the noise in its off-diagonal cells; an
    annotator with many labels in a row outweighs the prior, so real confusions (one who
    writes 7 for 1) are still learned. ``prior_strength=0`` is the maximum-likelihood
    Dawid-Skene of the 1979 paper; as it grows, the model tends to one-coin.

    ``prior_strength="auto"`` (default) estimates the strength by empirical Bayes in every
    M-step: the value that maximises the Dirichlet-multinomial marginal likelihood of the
    rows' counts under the items' most probable classes. Errors spread evenly give a strength
    at the top of the range (one-coin); systematic confusions give a few pseudo-counts per row.
    The fitted value is in ``extra["prior_strength"]``.

    ``model="one-coin"``: one accuracy per annotator, with errors uniform over the other
    classes (the limit of an infinite ``prior_strength``).

    ``init``: ``"weighted"`` (default) starts EM from the one-coin posterior of a vote weighted
    by each annotator's agreement with the majority vote; ``"majority"`` starts from the
    majority vote's vote shares. ``smoothing`` is a pseudo-count added to every confusion
    cell and prior entry (keeps an annotator who never used a label from ruling it out with
    probability 0). Stops when no posterior moves by more than ``tol``.
    """
    if model not in DS_MODELS:
        raise LabelDataError(
            f"unknown Dawid-Skene model {model!r}: expected one of {', '.join(DS_MODELS)}"
        )
    if init not in DS_INITS:
        raise LabelDataError(
            f"unknown initialisation {init!r}: expected one of {', '.join(DS_INITS)}"
        )
    num_classes = crowd.num_classes
    auto = isinstance(prior_strength, str)
    if auto and prior_strength != "auto":
        raise LabelDataError(
            f"prior_strength must be 'auto' or a number >= 0, not {prior_strength!r}"
        )
    strength = None if auto else float(prior_strength)
    if strength is not None and not (np.isfinite(strength) and strength >= 0):
        raise LabelDataError(f"prior_strength must be 'auto' or a number >= 0, not {strength}")
    if init == "majority":
        posts = majority_vote(crowd, seed=seed).posteriors
    else:
        posts = _weighted_vote(crowd, seed=seed)
    converged = False
    it = 0
    fitted = 0.0
    prior = np.full(num_classes, 1.0 / num_classes)
    conf = np.zeros((crowd.num_annotators, num_classes, num_classes))
    for it in range(1, max_iter + 1):
        prior, conf, fitted = _ds_m_step(crowd, posts, model, strength, smoothing)
        # E-step: posterior over each item's true class.
        logp = np.tile(np.log(prior), (crowd.num_items, 1))
        np.add.at(logp, crowd.items, np.log(conf[crowd.annotators, :, crowd.labels]))
        new = _normalise_log(logp)
        delta = np.abs(new - posts).max()
        posts = new
        if it > 1 and delta < tol:
            converged = True
            break
    labels = _argmax_random_ties(posts, np.random.default_rng(seed))
    skills = np.einsum("c,acc->a", prior, conf)
    return Aggregation(
        "dawid_skene",
        labels,
        posts,
        skills,
        crowd,
        confusions=conf,
        prior=prior,
        iterations=it,
        converged=converged,
        extra={
            "model": model,
            "prior_strength": fitted,
            "prior_strength_estimated": strength is None and model == "confusion",
            "init": init,
        },
    )


def _one_coin(accuracy: np.ndarray, num_classes: int) -> np.ndarray:
    """Annotators x true x given matrices: ``accuracy`` on the diagonal, the rest uniform."""
    if num_classes == 1:
        return np.ones((len(accuracy), 1, 1))
    off = (1.0 - accuracy) / (num_classes - 1)
    eye = np.eye(num_classes)
    return accuracy[:, None, None] * eye + off[:, None, None] * (1.0 - eye)


def _confusion_counts(
    crowd: CrowdLabels, posts: np.ndarray, smoothing: float
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of (annotator, true class, given label), each record weighted by its item's
    posterior, and each annotator's one-coin matrix (accuracy: the share of their labels
    that are right, with a Beta(smoothing, smoothing) pseudo-count)."""
    num_classes = crowd.num_classes
    counts = np.zeros((crowd.num_annotators, num_classes, num_classes))
    np.add.at(counts, (crowd.annotators, slice(None), crowd.labels), posts[crowd.items])
    right = np.einsum("acc->a", counts)
    total = counts.sum(axis=(1, 2))
    coin = _one_coin((right + smoothing) / (total + 2 * smoothing), num_classes)
    return counts, coin


def _ds_m_step(
    crowd: CrowdLabels, posts: np.ndarray, model: str, strength: float | None, smoothing: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Class prior, confusion matrices and prior strength given the posteriors over the true
    classes (``strength=None``: estimated, see :func:`_evidence_strength`)."""
    prior = posts.sum(axis=0) + smoothing
    prior /= prior.sum()
    counts, coin = _confusion_counts(crowd, posts, smoothing)
    if model == "one-coin":
        return prior, coin, np.inf
    if strength is None:
        # The evidence is that of counts under one labelling: the most probable one. Expected
        # counts average over the labellings of uncertain items, which hides the confusions
        # that the annotators do make and drags the estimate towards one-coin.
        best = np.eye(crowd.num_classes)[posts.argmax(axis=1)]
        strength = _evidence_strength(*_confusion_counts(crowd, best, smoothing))
    # MAP of each row under a Dirichlet(1 + strength * coin row + smoothing) prior.
    conf = counts + strength * coin + smoothing
    conf /= conf.sum(axis=2, keepdims=True)
    return prior, conf, strength


#: Range searched for the prior strength (pseudo-counts per row): from a prior with no say to
#: one that outweighs any annotator's row (the one-coin model).
PRIOR_STRENGTH_RANGE = (1e-3, 1e5)


def _evidence_strength(counts: np.ndarray, coin: np.ndarray) -> float:
    """Empirical Bayes (type-II maximum likelihood): the strength ``s`` that maximises the
    Dirichlet-multinomial marginal likelihood of the confusion rows ``counts`` when each row
    is drawn from Dirichlet(``s * coin row``). Rows that scatter about their one-coin mean
    no more than sampling noise does give a large ``s`` (uniform errors); rows whose errors
    pile up on a few classes (systematic confusions) give a small one."""
    n = counts.sum(axis=2)
    used = n > 0
    counts, coin, n = counts[used], np.maximum(coin[used], 1e-12), n[used]

    def neg_log_evidence(log_s: float) -> float:
        s = np.exp(log_s)
        alpha = s * coin
        rows = gammaln(s) - gammaln(s + n)
        cells = (gammaln(counts + alpha) - gammaln(alpha)).sum(axis=1)
        return -float((rows + cells).sum())

    lo, hi = np.log(PRIOR_STRENGTH_RANGE[0]), np.log(PRIOR_STRENGTH_RANGE[1])
    best = minimize_scalar(neg_log_evidence, bounds=(lo, hi), method="bounded")
    return float(np.exp(best.x))


def _weighted_vote(crowd: CrowdLabels, *, seed: int) -> np.ndarray:
    """One-coin posteriors of a vote weighted by each annotator's agreement with the
    majority vote (read as their accuracy): a start for EM that already discounts the
    annotators who disagree with the crowd, so that their votes do not shape the first
    confusion matrices as much as everyone else's."""
    num_classes = crowd.num_classes
    counts = np.bincount(crowd.annotators, minlength=crowd.num_annotators).astype(float)
    agree = _agreement(crowd, majority_vote(crowd, seed=seed).labels) * counts
    # Beta(1, 1) shrinkage keeps an annotator with a handful of labels away from 0 and 1.
    accuracy = (agree + 1.0) / (counts + 2.0)
    coin = _one_coin(accuracy, num_classes)
    logp = np.zeros((crowd.num_items, num_classes))
    np.add.at(logp, crowd.items, np.log(coin[crowd.annotators, :, crowd.labels]))
    return _normalise_log(logp)


def mace(
    crowd: CrowdLabels,
    *,
    max_iter: int = 500,
    tol: float = 1e-6,
    smoothing: float = 0.01,
    seed: int = 0,
) -> Aggregation:
    """MACE by EM: ``P(answer = l | true = t) = theta_a [l = t] + (1 - theta_a) xi_a[l]``
    with a uniform prior over true labels (as Hovy et al.).

    Competences start at 0.5 and spam distributions uniform, so the first E-step is a
    majority vote; ``smoothing`` adds pseudo-counts to both M-step estimates.
    """
    num_classes = crowd.num_classes
    a, items, labels = crowd.annotators, crowd.items, crowd.labels
    theta = np.full(crowd.num_annotators, 0.5)
    spam = np.full((crowd.num_annotators, num_classes), 1.0 / num_classes)
    counts = np.bincount(a, minlength=crowd.num_annotators).astype(float)
    posts = np.full((crowd.num_items, num_classes), 1.0 / num_classes)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        # E-step over true labels.
        spam_l = (1.0 - theta[a]) * spam[a, labels]  # P(answer | spamming) share, per record
        loglik = np.tile(np.log(spam_l)[:, None], (1, num_classes))
        loglik[np.arange(len(labels)), labels] = np.log(theta[a] + spam_l)
        logp = np.zeros((crowd.num_items, num_classes))
        np.add.at(logp, items, loglik)
        new = _normalise_log(logp)
        delta = np.abs(new - posts).max()
        posts = new
        # M-step: expected knowing answers (only possible when the answer is the true label).
        knowing = posts[items, labels] * theta[a] / (theta[a] + spam_l)
        theta = (np.bincount(a, weights=knowing, minlength=len(theta)) + smoothing) / (
            counts + 2 * smoothing
        )
        spam = np.full((crowd.num_annotators, num_classes), float(smoothing))
        np.add.at(spam, (a, labels), 1.0 - knowing)
        spam /= spam.sum(axis=1, keepdims=True)
        if it > 1 and delta < tol:
            converged = True
            break
    chosen = _argmax_random_ties(posts, np.random.default_rng(seed))
    return Aggregation(
        "mace",
        chosen,
        posts,
        theta,
        crowd,
        spam=spam,
        iterations=it,
        converged=converged,
    )


def aggregate(crowd: CrowdLabels, method: str = "dawid_skene", **kwargs: Any) -> Aggregation:
    """Aggregate with the named method (one of :data:`METHODS`)."""
    table = {"majority_vote": majority_vote, "dawid_skene": dawid_skene, "mace": mace}
    if method not in table:
        raise LabelDataError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
    return table[method](crowd, **kwargs)
