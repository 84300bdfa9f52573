"""Faithfulness metrics of attributions: deletion and insertion curves (Petsiuk et al., 2018).

*Deletion* replaces the most important features first (by the attribution) with the baseline
and records the target's probability; a faithful map makes it fall fast (low AUC).
*Insertion* starts from the baseline (a blurred image by default) and restores the most
important features first; a faithful map makes it rise fast (high AUC). Every curve point is a
mask, so a whole curve is one batch of :meth:`GradientModel.run_masks` (masks in the graph).
``order="random"`` gives the random-attribution reference the benchmarks report beside.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from optimizer.explain.errors import ExplainError
from optimizer.explain.gradients import GradientModel


@dataclass
class CurveResult:
    """Per-example curves (``[N, steps + 1]``, fraction of features from 0 to 1) and AUCs."""

    fractions: np.ndarray
    deletion: np.ndarray
    insertion: np.ndarray

    @property
    def deletion_auc(self) -> np.ndarray:
        """Area under each deletion curve (lower is better)."""
        return np.trapezoid(self.deletion, self.fractions, axis=1)

    @property
    def insertion_auc(self) -> np.ndarray:
        """Area under each insertion curve (higher is better)."""
        return np.trapezoid(self.insertion, self.fractions, axis=1)


def blur(x: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    """A Gaussian blur over the spatial axes of ``[N, C, H, W]`` images (insertion baseline)."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="nearest").astype(x.dtype)


def _probabilities(out: np.ndarray, target: int, score: str) -> np.ndarray:
    flat = out.reshape(len(out), -1).astype(np.float64)
    if score == "softmax":
        flat = np.exp(flat - flat.max(axis=1, keepdims=True))
        flat /= flat.sum(axis=1, keepdims=True)
    elif score != "raw":
        raise ExplainError(f"unknown score {score!r}: 'softmax' or 'raw'")
    return flat[:, target]


def deletion_insertion(
    gm: GradientModel,
    x: np.ndarray,
    attributions: np.ndarray,
    targets: np.ndarray,
    *,
    steps: int = 32,
    deletion_baseline: np.ndarray | float = 0.0,
    insertion_baseline: np.ndarray | str = "blur",
    score: str = "softmax",
    order: str = "attribution",
    seed: int = 0,
    extra: Mapping[str, np.ndarray] | None = None,
    masks_per_run: int = 64,
) -> CurveResult:
    """Deletion and insertion curves of ``attributions`` for examples ``x``.

    For images (``[N, C, H, W]``) pixels are ranked by the attribution summed over channels and
    a pixel is removed or restored in all channels at once; other inputs rank elements.
    ``score`` "softmax" turns the output row into probabilities first ("raw": use it as is).
    """
    x = np.asarray(x, dtype=gm.dtype)
    image = x.ndim == 4
    ranking = attributions.sum(axis=1) if image else attributions
    ranking = ranking.reshape(len(x), -1)
    features = ranking.shape[1]
    mask_shape = (1, *x.shape[2:]) if image else tuple(x.shape[1:])
    fractions = np.linspace(0.0, 1.0, steps + 1)
    counts = np.round(fractions * features).astype(int)
    rng = np.random.default_rng(seed)
    deletion = np.zeros((len(x), steps + 1))
    insertion = np.zeros((len(x), steps + 1))
    ins_base_all = blur(x) if isinstance(insertion_baseline, str) else insertion_baseline
    if isinstance(insertion_baseline, str) and insertion_baseline != "blur":
        raise ExplainError(f"unknown insertion baseline {insertion_baseline!r}")
    for i in range(len(x)):
        if order == "random":
            rank = rng.permutation(features)
        elif order == "attribution":
            rank = np.argsort(-ranking[i], kind="stable")
        else:
            raise ExplainError(f"unknown order {order!r}: 'attribution' or 'random'")
        # kept[s]: features still present after removing the first counts[s] of the ranking.
        position = np.empty(features, dtype=int)
        position[rank] = np.arange(features)
        kept = (position[None, :] >= counts[:, None]).astype(gm.dtype)
        kept = kept.reshape((steps + 1, *mask_shape))
        example = x[i : i + 1]
        sub_extra = (
            None if extra is None else {k: np.asarray(v)[i : i + 1] for k, v in extra.items()}
        )
        del_base = _one(deletion_baseline, x, i)
        ins_base = _one(ins_base_all, x, i)
        out = gm.run_masks(
            example, del_base, kept, mask_shape=mask_shape, extra=sub_extra,
            masks_per_run=masks_per_run,
        )  # fmt: skip
        deletion[i] = _probabilities(out, int(targets[i]), score)
        out = gm.run_masks(
            example, ins_base, 1 - kept, mask_shape=mask_shape, extra=sub_extra,
            masks_per_run=masks_per_run,
        )  # fmt: skip
        insertion[i] = _probabilities(out, int(targets[i]), score)
    return CurveResult(fractions, deletion, insertion)


def _one(baseline, x: np.ndarray, i: int) -> np.ndarray:
    base = np.asarray(baseline, dtype=x.dtype)
    if base.ndim == x.ndim and len(base) == len(x):
        return base[i : i + 1]
    return np.broadcast_to(base, x[i : i + 1].shape)
