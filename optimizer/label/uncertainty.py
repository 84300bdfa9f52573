"""Uncertainty of a classifier's predictions, from one forward pass or Monte Carlo samples.

One pass (``probs``: N x C class probabilities):

- :func:`least_confidence` ``1 - max_c p_c`` (Settles 2009, "Active Learning Literature Survey");
- :func:`margin` ``1 - (p_(1) - p_(2))``, one minus the gap between the two most probable
  classes (Scheffer et al. 2001), so that for every measure here larger means less sure;
- :func:`entropy` ``-sum_c p_c log p_c`` in nats (Shannon; Settles 2009).

Monte Carlo dropout (``samples``: T x N x C, T stochastic passes with dropout on; Gal and
Ghahramani 2016):

- :func:`bald` the mutual information between the prediction and the model parameters,
  ``H[mean_t p_t] - mean_t H[p_t]`` (Houlsby et al. 2011; Gal, Islam and Ghahramani 2017);
- :func:`mc_statistics` everything at once, including the variation ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.label.exceptions import LabelDataError

#: Measures computed from one forward pass, by name.
MEASURES = ("least_confidence", "margin", "entropy")


def check_probabilities(probs: np.ndarray, *, what: str = "probabilities") -> np.ndarray:
    """``probs`` as a float64 N x C array whose rows are distributions (else a clear error)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 1:
        raise LabelDataError(f"{what} must be an N x C array, got shape {probs.shape}")
    if probs.shape[0] == 0:
        raise LabelDataError(f"{what}: no rows")
    if not np.all(np.isfinite(probs)):
        raise LabelDataError(f"{what} hold NaN or infinite values")
    if probs.min() < -1e-6 or probs.max() > 1 + 1e-6:
        raise LabelDataError(
            f"{what} must lie in [0, 1] (got {probs.min():.3g}..{probs.max():.3g})"
        )
    sums = probs.sum(axis=1)
    if np.abs(sums - 1).max() > 1e-3:
        row = int(np.argmax(np.abs(sums - 1)))
        raise LabelDataError(f"{what}: row {row} sums to {sums[row]:.4g}, not 1")
    return np.clip(probs, 0.0, 1.0)


def _xlogx(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """``1 - max_c p_c`` per row (0: certain)."""
    probs = np.asarray(probs, dtype=np.float64)
    return 1.0 - probs.max(axis=1)


def top_two(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the most probable class, its probability, the runner-up and its probability."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[1] == 1:
        zeros = np.zeros(len(probs))
        return np.zeros(len(probs), dtype=np.int64), probs[:, 0], zeros.astype(np.int64), zeros
    order = np.argsort(-probs, axis=1, kind="stable")[:, :2]
    rows = np.arange(len(probs))
    first, second = order[:, 0], order[:, 1]
    return first, probs[rows, first], second, probs[rows, second]


def margin(probs: np.ndarray) -> np.ndarray:
    """``1 - (p_(1) - p_(2))`` per row: 1 when the two best classes tie, 0 when certain."""
    _, p1, _, p2 = top_two(probs)
    return 1.0 - (p1 - p2)


def entropy(probs: np.ndarray, *, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along ``axis`` (``log C`` at most, for C classes)."""
    return -_xlogx(np.asarray(probs, dtype=np.float64)).sum(axis=axis)


def bald(samples: np.ndarray) -> np.ndarray:
    """BALD score per item from T x N x C Monte Carlo samples: ``H[E_t p] - E_t H[p]`` (nats).

    Zero when every sample agrees; large when the samples are individually confident but
    disagree with each other (epistemic uncertainty).
    """
    samples = _check_samples(samples)
    # Clipping at 0 removes float rounding noise: mutual information is never negative.
    return np.maximum(entropy(samples.mean(axis=0)) - entropy(samples).mean(axis=0), 0.0)


def _check_samples(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3:
        raise LabelDataError(
            f"Monte Carlo samples must be a T x N x C array, got shape {samples.shape}"
        )
    if samples.shape[0] < 2:
        raise LabelDataError("BALD needs at least 2 Monte Carlo samples")
    return samples


@dataclass(frozen=True)
class MCStatistics:
    """Summary of T Monte Carlo samples of N items (arrays of length N, ``mean`` N x C)."""

    mean: np.ndarray
    std: np.ndarray
    predictive_entropy: np.ndarray
    expected_entropy: np.ndarray
    bald: np.ndarray
    variation_ratio: np.ndarray
    agreement: np.ndarray
    num_samples: int

    @staticmethod
    def concatenate(parts: list[MCStatistics]) -> MCStatistics:
        """Join the statistics of consecutive chunks of items."""
        fields = ("mean", "std", "predictive_entropy", "expected_entropy", "bald")
        joined = {f: np.concatenate([getattr(p, f) for p in parts]) for f in fields}
        joined["variation_ratio"] = np.concatenate([p.variation_ratio for p in parts])
        joined["agreement"] = np.concatenate([p.agreement for p in parts])
        return MCStatistics(**joined, num_samples=parts[0].num_samples)


def mc_statistics(samples: np.ndarray) -> MCStatistics:
    """Mean probabilities, their standard deviation over samples (per class), predictive
    entropy ``H[mean]``, expected entropy ``mean H``, BALD, variation ratio (the share of
    samples whose argmax is not the modal class, Freeman 1965) and agreement (1 - that)."""
    samples = _check_samples(samples)
    mean = samples.mean(axis=0)
    predictive = entropy(mean)
    expected = entropy(samples).mean(axis=0)
    votes = samples.argmax(axis=2)  # T x N
    num_classes = samples.shape[2]
    counts = np.zeros((samples.shape[1], num_classes), dtype=np.int64)
    for t in range(samples.shape[0]):
        counts[np.arange(samples.shape[1]), votes[t]] += 1
    agreement = counts.max(axis=1) / samples.shape[0]
    return MCStatistics(
        mean=mean,
        std=samples.std(axis=0),
        predictive_entropy=predictive,
        expected_entropy=expected,
        bald=np.maximum(predictive - expected, 0.0),
        variation_ratio=1.0 - agreement,
        agreement=agreement,
        num_samples=samples.shape[0],
    )


def scores(probs: np.ndarray) -> dict[str, np.ndarray]:
    """Every one-pass measure of :data:`MEASURES`, by name."""
    probs = np.asarray(probs, dtype=np.float64)
    return {
        "least_confidence": least_confidence(probs),
        "margin": margin(probs),
        "entropy": entropy(probs),
    }
