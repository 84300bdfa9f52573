"""Aggregating crowd labels: from (item, annotator, label) records to one label per item.

- :func:`majority_vote`: the most frequent label (ties broken at random, seeded);
- :func:`dawid_skene`: Dawid and Skene (1979), "Maximum likelihood estimation of observer
  error-rates using the EM algorithm": a class prior and one confusion matrix per annotator,
  fitted by expectation-maximisation from the majority vote;
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


def dawid_skene(
    crowd: CrowdLabels,
    *,
    max_iter: int = 500,
    tol: float = 1e-6,
    smoothing: float = 0.01,
    seed: int = 0,
) -> Aggregation:
    """Dawid-Skene EM: class prior ``pi`` and per-annotator confusion matrices
    ``theta[a, true, given]``, started from the majority vote's vote shares.

    ``smoothing`` is a Dirichlet pseudo-count added to every confusion cell and prior entry
    (keeps an annotator who never used a label from ruling it out with probability 0).
    Stops when no posterior moves by more than ``tol``.
    """
    num_classes = crowd.num_classes
    posts = majority_vote(crowd, seed=seed).posteriors
    converged = False
    it = 0
    prior = np.full(num_classes, 1.0 / num_classes)
    conf = np.zeros((crowd.num_annotators, num_classes, num_classes))
    for it in range(1, max_iter + 1):
        # M-step: expected counts of (annotator, true class, given label).
        prior = posts.sum(axis=0) + smoothing
        prior /= prior.sum()
        conf = np.full((crowd.num_annotators, num_classes, num_classes), float(smoothing))
        np.add.at(conf, (crowd.annotators, slice(None), crowd.labels), posts[crowd.items])
        conf /= conf.sum(axis=2, keepdims=True)
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
    )


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
