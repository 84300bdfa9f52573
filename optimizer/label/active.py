"""Active learning: which k unlabelled rows to label next, ranked and explained.

Strategies (as in modAL and small-text):

- ``least_confidence``, ``margin``, ``entropy``: the k most uncertain rows by that measure of
  :mod:`optimizer.label.uncertainty` (Settles 2009);
- ``bald``: the k rows of largest mutual information between prediction and model, from
  Monte Carlo dropout samples (Houlsby et al. 2011; Gal, Islam and Ghahramani 2017);
- ``coreset``: greedy k-center on embeddings (Sener and Savarese 2018): repeatedly take the
  row farthest from every labelled or already chosen row, so the choice covers the data;
- ``random``: uniform, the baseline every curve is compared with.

Every choice comes with its score and a sentence saying why it was chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from optimizer.label import uncertainty as unc
from optimizer.label.exceptions import LabelDataError

STRATEGIES = ("least_confidence", "margin", "entropy", "bald", "coreset", "random")
#: Rows of the distance matrix computed at once in k-center (bounds memory to ~block x N).
_BLOCK = 4096


@dataclass(frozen=True)
class Choice:
    """One selected row: its rank (1 = first to label), position in the dataset, id, score
    under the strategy (larger = more worth labelling) and the reason in words."""

    rank: int
    index: int
    id: object
    score: float
    reason: str


@dataclass(frozen=True)
class Selection:
    """The ranked choice of :func:`select`."""

    strategy: str
    choices: tuple[Choice, ...]

    @property
    def indices(self) -> np.ndarray:
        """Positions of the chosen rows, in rank order."""
        return np.array([c.index for c in self.choices], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.choices)


def _names(class_names: Sequence[str] | None, k: int) -> str:
    return str(class_names[k]) if class_names is not None else str(k)


def _pool(n: int, labeled: np.ndarray | Sequence[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Boolean mask of labelled rows and the positions of the unlabelled pool."""
    mask = np.zeros(n, dtype=bool)
    if labeled is not None:
        labeled = np.asarray(labeled)
        if labeled.dtype == bool:
            if len(labeled) != n:
                raise LabelDataError(f"labelled mask has {len(labeled)} entries for {n} rows")
            mask = labeled.copy()
        elif len(labeled):
            if labeled.dtype.kind not in "iu":
                raise LabelDataError("labelled rows must be given as positions or a boolean mask")
            if labeled.min() < 0 or labeled.max() >= n:
                raise LabelDataError(f"labelled position outside 0..{n - 1}")
            mask[labeled] = True
    return mask, np.flatnonzero(~mask)


def k_center_greedy(
    embeddings: np.ndarray,
    k: int,
    labeled: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-center: k row positions, each the farthest (Euclidean) from all centres so
    far, and its distance when chosen. Labelled rows are the initial centres; without any,
    the first centre is the row closest to the mean (so the result is deterministic)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        x = x.reshape(len(x), -1)
    n = len(x)
    mask, pool = _pool(n, labeled)
    k = min(k, len(pool))
    sq = np.einsum("ij,ij->i", x, x)

    def dist_to(rows: np.ndarray) -> np.ndarray:
        best = np.full(n, np.inf)
        for start in range(0, len(rows), _BLOCK):
            c = x[rows[start : start + _BLOCK]]
            d = sq[:, None] - 2 * x @ c.T + np.einsum("ij,ij->i", c, c)[None, :]
            best = np.minimum(best, d.min(axis=1))
        return np.sqrt(np.maximum(best, 0.0))

    chosen: list[int] = []
    gaps: list[float] = []
    if mask.any():
        nearest = dist_to(np.flatnonzero(mask))
    else:
        centre = x.mean(axis=0)
        first = int(np.argmin(((x - centre) ** 2).sum(axis=1)))
        chosen.append(first)
        gaps.append(float(np.sqrt(((x[first] - centre) ** 2).sum())))
        nearest = dist_to(np.array([first]))
    nearest[mask] = -np.inf
    for i in chosen:
        nearest[i] = -np.inf
    while len(chosen) < k:
        i = int(np.argmax(nearest))
        chosen.append(i)
        gaps.append(float(nearest[i]))
        nearest = np.minimum(nearest, dist_to(np.array([i])))
        nearest[i] = -np.inf
    return np.array(chosen, dtype=np.int64), np.array(gaps)


def select(
    k: int,
    strategy: str = "margin",
    *,
    probs: np.ndarray | None = None,
    samples: np.ndarray | None = None,
    bald_scores: np.ndarray | None = None,
    agreement: np.ndarray | None = None,
    embeddings: np.ndarray | None = None,
    labeled: np.ndarray | Sequence[int] | None = None,
    ids: Sequence[object] | np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
) -> Selection:
    """Choose the next ``k`` rows to label from the unlabelled pool.

    Inputs by strategy: ``probs`` (N x C) for the uncertainty measures; ``samples``
    (T x N x C) or precomputed ``bald_scores`` (N, with ``agreement`` for the explanation)
    for ``bald``; ``embeddings`` (N x D) for ``coreset``; nothing but N (from any of them)
    for ``random``. ``labeled`` (positions or a boolean mask) are never chosen. Returns at
    most ``k`` choices (fewer when the pool is smaller), best first.
    """
    if strategy not in STRATEGIES:
        raise LabelDataError(
            f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}"
        )
    if k < 1:
        raise LabelDataError(f"k must be at least 1, got {k}")
    n = _size(probs, samples, bald_scores, embeddings)
    if ids is not None and len(ids) != n:
        raise LabelDataError(f"{len(ids)} ids for {n} rows")
    ids = np.arange(n) if ids is None else np.asarray(ids)
    mask, pool = _pool(n, labeled)
    if len(pool) == 0:
        raise LabelDataError("every row is already labelled: nothing to select")

    if strategy == "coreset":
        if embeddings is None:
            raise LabelDataError("the coreset strategy needs embeddings")
        chosen, gaps = k_center_greedy(embeddings, k, mask)
        choices = []
        for rank, (i, gap) in enumerate(zip(chosen, gaps), start=1):
            why = (
                f"farthest from every labelled and chosen row (distance {gap:.3g} in embedding "
                "space): covers an unrepresented region"
            )
            if rank == 1 and not mask.any():
                why = "closest to the data's centre (no labelled rows yet: first centre)"
            choices.append(Choice(rank, int(i), ids[i].item(), float(gap), why))
        return Selection(strategy, tuple(choices))

    if strategy == "random":
        rng = np.random.default_rng(seed)
        chosen = rng.permutation(pool)[:k]
        choices = [
            Choice(r, int(i), ids[i].item(), 0.0, "uniformly random (baseline)")
            for r, i in enumerate(chosen, start=1)
        ]
        return Selection(strategy, tuple(choices))

    if strategy == "bald":
        if bald_scores is None:
            if samples is None:
                raise LabelDataError("the bald strategy needs Monte Carlo dropout samples")
            stats = unc.mc_statistics(samples)
            bald_scores, agreement, probs = stats.bald, stats.agreement, stats.mean
        score = np.asarray(bald_scores, dtype=np.float64)
    else:
        if probs is None:
            raise LabelDataError(f"the {strategy} strategy needs class probabilities")
        probs = unc.check_probabilities(probs)
        score = getattr(unc, strategy)(probs)

    order = pool[np.argsort(-score[pool], kind="stable")][:k]
    choices = []
    for rank, i in enumerate(order, start=1):
        why = _explain(strategy, int(i), score, probs, agreement, class_names)
        choices.append(Choice(rank, int(i), ids[i].item(), float(score[i]), why))
    return Selection(strategy, tuple(choices))


def _size(*arrays) -> int:
    probs, samples, bald_scores, embeddings = arrays
    if probs is not None:
        return len(probs)
    if samples is not None:
        return np.asarray(samples).shape[1]
    if bald_scores is not None:
        return len(bald_scores)
    if embeddings is not None:
        return len(embeddings)
    raise LabelDataError("nothing to select from: give probabilities, samples or embeddings")


def _explain(strategy, i, score, probs, agreement, class_names) -> str:
    if probs is None:
        return f"mutual information {score[i]:.3g} nats between prediction and model"
    p = np.asarray(probs[i], dtype=np.float64)
    order = np.argsort(-p, kind="stable")
    top = order[0]
    second = order[1] if len(p) > 1 else order[0]
    a, b = _names(class_names, top), _names(class_names, second)
    if strategy == "least_confidence":
        return f"the most probable class {a} gets only {p[top]:.2f}"
    if strategy == "margin":
        return (
            f"classes {a} ({p[top]:.2f}) and {b} ({p[second]:.2f}) are only "
            f"{p[top] - p[second]:.2f} apart"
        )
    if strategy == "entropy":
        share = score[i] / np.log(len(p)) if len(p) > 1 else 0.0
        return (
            f"entropy {score[i]:.3g} nats ({share:.0%} of the maximum): probability spread over "
            f"{a} ({p[top]:.2f}), {b} ({p[second]:.2f}) and others"
        )
    if agreement is None:
        votes = ""
    elif agreement[i] >= 1.0:
        votes = f"; every sample votes {a}"
    else:
        votes = f"; {agreement[i]:.0%} of the samples vote {a}"
    return (
        f"mutual information {score[i]:.3g} nats: the dropout samples disagree "
        f"(mean p({a})={p[top]:.2f}, p({b})={p[second]:.2f}{votes})"
    )
