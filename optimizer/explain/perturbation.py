"""Perturbation attribution methods whose masks are applied inside the graph.

Each method turns its perturbations into masks over one example and hands them to
:meth:`GradientModel.run_masks`, which evaluates ``masks_per_run`` of them per onnxruntime call
on a graph rewritten by :func:`~optimizer.explain.graph_edit.add_mask_input`
(``x' = baseline + mask * (x - baseline)`` in the graph). No perturbed copy of the input is
built in Python; only the masks cross into the runtime (per segment for KernelSHAP).

- :func:`occlusion`: slide a window of baseline values over the input; a feature's attribution
  is the mean drop of the target over the windows covering it (Zeiler & Fergus, 2014; captum's
  ``Occlusion``).
- :func:`rise`: random smooth masks; saliency = mask average weighted by the target score
  (Petsiuk et al., 2018).
- :func:`kernel_shap`: Shapley values of segments (superpixels) estimated by weighted linear
  regression over coalitions drawn from the Shapley kernel, with the efficiency constraint
  ``sum(phi) = f(x) - f(baseline)`` imposed exactly (Lundberg & Lee, 2017); all coalitions are
  enumerated when there are few enough, which makes the values exact.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from optimizer.explain.attribution import Attribution, prepare_inputs, resize_bilinear
from optimizer.explain.errors import ExplainError
from optimizer.explain.gradients import GradientModel, ModelLike, Target
from optimizer.explain.progress import progress_bar


def _scores(out: np.ndarray, target: int) -> np.ndarray:
    return out.reshape(len(out), -1)[:, target].astype(np.float64)


def _example(x: np.ndarray, i: int) -> np.ndarray:
    return x[i : i + 1]


def _extra_of(extra, i: int):
    return None if extra is None else {k: np.asarray(v)[i : i + 1] for k, v in extra.items()}


def _baseline_of(baseline, x: np.ndarray, i: int) -> np.ndarray:
    base = np.asarray(baseline, dtype=x.dtype)
    if base.ndim == x.ndim and len(base) == len(x) and len(x) > 1:
        return base[i : i + 1]
    return np.broadcast_to(base, x[i : i + 1].shape)


# ------------------------------------------------------------------------------ occlusion


def _window_starts(size: int, window: int, stride: int) -> list[int]:
    if window > size:
        raise ExplainError(f"occlusion window {window} is larger than the dim {size}")
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:  # cover the trailing features too
        starts.append(size - window)
    return starts


def occlusion(
    model: GradientModel | ModelLike,
    x: np.ndarray,
    target: Target = None,
    *,
    window: Sequence[int],
    stride: Sequence[int] | int | None = None,
    baseline: np.ndarray | float = 0.0,
    extra: Mapping[str, np.ndarray] | None = None,
    masks_per_run: int = 64,
    progress: bool = False,
) -> Attribution:
    """Occlusion with a sliding ``window`` over one example's dims (``(C, h, w)`` for images;
    a window spanning a whole dim occludes it entirely), moved by ``stride`` (default: the
    window, i.e. no overlap)."""
    gm, x, targets = prepare_inputs(model, x, target, extra, masks_per_run)
    example = x.shape[1:]
    window = tuple(int(w) for w in window)
    if len(window) != len(example):
        raise ExplainError(f"window {window} must have one size per dim of an example {example}")
    strides = window if stride is None else (
        (int(stride),) * len(window) if isinstance(stride, int) else tuple(int(s) for s in stride)
    )  # fmt: skip
    # Dims the window spans entirely need no mask axis of their own: broadcast them.
    mask_shape = tuple(1 if w == d else d for w, d in zip(window, example))
    axes = [i for i, (w, d) in enumerate(zip(window, example)) if w != d]
    positions = list(
        itertools.product(*[_window_starts(example[a], window[a], strides[a]) for a in axes])
    )
    masks = np.ones((len(positions) + 1, *mask_shape), dtype=gm.dtype)  # [0]: unmasked
    for k, starts in enumerate(positions, start=1):
        index = [slice(None)] * len(mask_shape)
        for a, s in zip(axes, starts):
            index[a] = slice(s, s + window[a])
        masks[(k, *index)] = 0
    occluded = 1 - masks[1:]
    counts = occluded.sum(axis=0)
    out = np.zeros_like(x, dtype=np.float64)
    with progress_bar(len(x) * len(masks), "occlusion", progress) as advance:
        for i in range(len(x)):
            scores = _scores(
                gm.run_masks(
                    _example(x, i), _baseline_of(baseline, x, i), masks,
                    mask_shape=mask_shape, extra=_extra_of(extra, i),
                    masks_per_run=masks_per_run, progress=advance,
                ),
                targets[i],
            )  # fmt: skip
            drop = scores[0] - scores[1:]
            total = np.tensordot(drop, occluded, axes=1)
            out[i] = np.broadcast_to(
                np.where(counts > 0, total / np.maximum(counts, 1), 0), example
            )
    return Attribution("occlusion", out.astype(x.dtype), targets)


# ------------------------------------------------------------------------------ RISE


def rise_masks(
    count: int, size: tuple[int, int], cells: int, p: float, rng: np.random.Generator
) -> np.ndarray:
    """RISE masks ``[count, H, W]``: ``cells x cells`` binary grids (keep probability ``p``)
    upsampled bilinearly to ``(cells + 1) * cell`` and shifted by a random offset."""
    h, w = size
    cell_h, cell_w = math.ceil(h / cells), math.ceil(w / cells)
    grids = (rng.random((count, cells, cells)) < p).astype(np.float32)
    up = resize_bilinear(grids, ((cells + 1) * cell_h, (cells + 1) * cell_w))
    dy = rng.integers(0, cell_h, count)
    dx = rng.integers(0, cell_w, count)
    return np.stack([up[k, dy[k] : dy[k] + h, dx[k] : dx[k] + w] for k in range(count)])


def rise(
    model: GradientModel | ModelLike,
    x: np.ndarray,
    target: Target = None,
    *,
    masks: int = 1000,
    cells: int = 7,
    p: float = 0.5,
    seed: int = 0,
    baseline: np.ndarray | float = 0.0,
    extra: Mapping[str, np.ndarray] | None = None,
    masks_per_run: int = 64,
    progress: bool = False,
) -> Attribution:
    """RISE saliency. Images (``[N, C, H, W]``) get smooth masks shared by all channels; other
    inputs get independent binary masks per element."""
    gm, x, targets = prepare_inputs(model, x, target, extra, masks_per_run)
    rng = np.random.default_rng(seed)
    if x.ndim == 4:
        drawn = rise_masks(masks, x.shape[2:], cells, p, rng)[:, None]
    else:
        drawn = (rng.random((masks, *x.shape[1:])) < p).astype(np.float32)
    drawn = drawn.astype(gm.dtype)
    mask_shape = tuple(drawn.shape[1:])
    out = np.zeros_like(x, dtype=np.float64)
    with progress_bar(len(x) * masks, "rise", progress) as advance:
        for i in range(len(x)):
            scores = _scores(
                gm.run_masks(
                    _example(x, i), _baseline_of(baseline, x, i), drawn,
                    mask_shape=mask_shape, extra=_extra_of(extra, i),
                    masks_per_run=masks_per_run, progress=advance,
                ),
                targets[i],
            )  # fmt: skip
            sal = np.tensordot(scores, drawn.astype(np.float64), axes=1) / (masks * p)
            out[i] = np.broadcast_to(sal, x.shape[1:])
    return Attribution("rise", out.astype(x.dtype), targets)


# ------------------------------------------------------------------------------ KernelSHAP


def grid_segments(example_shape: Sequence[int], grid: int | Sequence[int]) -> np.ndarray:
    """Superpixels for an image example ``(C, H, W)``: a ``gh x gw`` grid of blocks, as segment
    ids of shape ``(1, H, W)`` shared by the channels."""
    if len(example_shape) != 3:
        raise ExplainError("grid segments are for images (C, H, W); pass `segments` instead")
    _, h, w = example_shape
    gh, gw = (grid, grid) if isinstance(grid, int) else tuple(grid)
    rows = np.minimum(np.arange(h) * gh // h, gh - 1)
    cols = np.minimum(np.arange(w) * gw // w, gw - 1)
    return (rows[:, None] * gw + cols[None, :])[None].astype(np.int64)


def shapley_kernel_weight(k: int, size: int) -> float:
    """The Shapley kernel weight of a coalition of ``size`` among ``k`` features."""
    return (k - 1) / (math.comb(k, size) * size * (k - size))


def _coalitions(k: int, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coalitions (rows of 0/1) and their regression weights, excluding the empty and full ones.

    All ``2^k - 2`` when they fit in ``samples`` (exact Shapley values, kernel weights);
    otherwise sizes drawn from the kernel's distribution over sizes, a uniform subset of each
    size, and its complement (paired sampling), all with weight 1."""
    if 2**k - 2 <= samples:
        rows = np.array(
            [[(m >> j) & 1 for j in range(k)] for m in range(1, 2**k - 1)], dtype=np.float64
        )
        sizes = rows.sum(axis=1).astype(int)
        return rows, np.array([shapley_kernel_weight(k, int(s)) for s in sizes])
    sizes = np.arange(1, k)
    prob = (k - 1) / (sizes * (k - sizes))
    prob /= prob.sum()
    half = max(1, samples // 2)
    drawn = rng.choice(sizes, size=half, p=prob)
    rows = np.zeros((2 * half, k))
    for i, s in enumerate(drawn):
        rows[2 * i, rng.choice(k, size=s, replace=False)] = 1
        rows[2 * i + 1] = 1 - rows[2 * i]
    return rows, np.ones(len(rows))


def _constrained_fit(z: np.ndarray, y: np.ndarray, w: np.ndarray, total: float) -> np.ndarray:
    """Weighted least squares ``y ~ z @ phi`` subject to ``sum(phi) == total``."""
    k = z.shape[1]
    if k == 1:
        return np.array([total])
    # Substitute phi_k = total - sum(phi_<k): y - z_k total = (z_<k - z_k) @ phi_<k.
    a = z[:, :-1] - z[:, -1:]
    b = y - z[:, -1] * total
    sw = np.sqrt(w)[:, None]
    head, *_ = np.linalg.lstsq(a * sw, b * sw[:, 0], rcond=None)
    return np.append(head, total - head.sum())


def kernel_shap(
    model: GradientModel | ModelLike,
    x: np.ndarray,
    target: Target = None,
    *,
    segments: np.ndarray | None = None,
    grid: int | Sequence[int] = 4,
    samples: int = 512,
    baseline: np.ndarray | float = 0.0,
    seed: int = 0,
    extra: Mapping[str, np.ndarray] | None = None,
    masks_per_run: int = 64,
    progress: bool = False,
) -> Attribution:
    """KernelSHAP over ``segments`` (an int map broadcastable to one example, ids 0..K-1;
    default: a ``grid`` of superpixels for images, every element for other inputs).

    Each element's attribution is its segment's Shapley value; ``Attribution.features`` holds
    the values per segment, ``[N, K]``."""
    gm, x, targets = prepare_inputs(model, x, target, extra, masks_per_run)
    example = x.shape[1:]
    if segments is None:
        if len(example) == 3:
            segments = grid_segments(example, grid)
        else:
            segments = np.arange(int(np.prod(example))).reshape(example)
    segments = np.asarray(segments, dtype=np.int64)
    k = int(segments.max()) + 1
    if sorted(np.unique(segments)) != list(range(k)):
        raise ExplainError("segment ids must be 0..K-1 with every id used")
    rng = np.random.default_rng(seed)
    rows, weights = _coalitions(k, samples, rng)
    masks = np.concatenate([np.ones((1, k)), np.zeros((1, k)), rows]).astype(gm.dtype)
    phis = np.zeros((len(x), k))
    out = np.zeros_like(x, dtype=np.float64)
    with progress_bar(len(x) * len(masks), "kernel shap", progress) as advance:
        for i in range(len(x)):
            scores = _scores(
                gm.run_masks(
                    _example(x, i), _baseline_of(baseline, x, i), masks,
                    segments=segments, extra=_extra_of(extra, i),
                    masks_per_run=masks_per_run, progress=advance,
                ),
                targets[i],
            )  # fmt: skip
            full, empty = scores[0], scores[1]
            phis[i] = _constrained_fit(rows, scores[2:] - empty, weights, full - empty)
            out[i] = np.broadcast_to(phis[i][segments], example)
    return Attribution("kernel_shap", out.astype(x.dtype), targets, features=phis)
