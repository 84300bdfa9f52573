"""Gradient attribution methods for any ONNX model, on the IR's VJP graph.

Every method takes a :class:`~optimizer.explain.gradients.GradientModel` (or anything one can be
built from), a batch of inputs ``x`` (leading axis: examples) and targets, runs in chunks of
``batch_size`` examples per onnxruntime call, and returns an :class:`Attribution`.

- :func:`saliency`: ``|d f / d x|`` (Simonyan et al., 2014).
- :func:`input_x_gradient`: ``x * d f / d x`` (Shrikumar et al., 2016).
- :func:`integrated_gradients`: ``(x - x') * integral_0^1 d f(x' + a (x - x')) / d x da``
  (Sundararajan et al., 2017), Gauss-Legendre or Riemann quadrature; the result records the
  completeness gap ``sum(attributions) - (f(x) - f(x'))``.
- :func:`smoothgrad`: the gradient averaged over noisy copies of the input (Smilkov et al.,
  2017).
- :func:`grad_cam`: ``ReLU(sum_k mean(d f / d A_k) A_k)`` on a named layer ``A`` (Selvaraju et
  al., 2017), upsampled bilinearly to the input's spatial size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from optimizer.explain.errors import ExplainError
from optimizer.explain.gradients import GradientModel, ModelLike, Target, as_gradient_model
from optimizer.explain.progress import progress_bar


@dataclass
class Attribution:
    """The result of an attribution method.

    - ``attributions``: one map per example (the input's shape; Grad-CAM: ``[N, H, W]``).
    - ``targets``: the explained output entry of each example (flat index into its output).
    - ``scores``: the model's output at the target, per example.
    - ``delta``: integrated gradients only: ``sum(attributions) - (f(x) - f(baseline))``.
    - ``baseline_scores``: integrated gradients only: ``f(baseline)`` at the target.
    - ``features``: KernelSHAP only: the Shapley value of each segment, ``[N, K]``.
    """

    method: str
    attributions: np.ndarray
    targets: np.ndarray
    scores: np.ndarray | None = None
    delta: np.ndarray | None = None
    baseline_scores: np.ndarray | None = None
    features: np.ndarray | None = None


def prepare_inputs(
    model: GradientModel | ModelLike, x: np.ndarray, target: Target, extra, batch_size: int
) -> tuple[GradientModel, np.ndarray, np.ndarray]:
    """The GradientModel, ``x`` in its dtype, and resolved targets (argmax when None)."""
    gm = as_gradient_model(model)
    x = np.asarray(x, dtype=gm.dtype)
    if x.ndim == 0:
        raise ExplainError("x must have a leading batch axis")
    outputs = gm.predict(x, extra=extra, batch_size=batch_size) if target is None else None
    return gm, x, gm.resolve_targets(target, len(x), outputs)


def saliency(
    model: GradientModel | ModelLike,
    x: np.ndarray,
    target: Target = None,
    *,
    absolute: bool = True,
    extra: Mapping[str, np.ndarray] | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> Attribution:
    """The gradient of the target with respect to the input (its absolute value by default)."""
    gm, x, targets = prepare_inputs(model, x, target, extra, batch_size)
    with progress_bar(len(x), "saliency", progress) as advance:
        scores, grads, _ = gm.target_gradients(
            x, targets, extra=extra, batch_size=batch_size, progress=advance
        )
    return Attribution("saliency", np.abs(grads) if absolute else grads, targets, scores)  # type: ignore[arg-type]


def input_x_gradient(
    model: GradientModel | ModelLike,
    x: np.ndarray,
    target: Target = None,
    *,
    extra: Mapping[str, np.ndarray] | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> Attribution:
    """The input times the gradient of the target with respect to it."""
    gm, x, targets = prepare_inputs(model, x, target, extra, batch_size)
    with progress_bar(len(x), "input x gradient", progress) as advance:
        scores, grads, _ = gm.target_gradients(
            x, targets, extra=extra, batch_size=batch_size, progress=advance
        )
    return Attribution("input_x_gradient", x * grads, targets, scores)


def quadrature(steps: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] and weights of the path-integral rule ``method``:
    "gausslegendre" (captum's default), "riemann_trapezoid", "riemann_middle",
    "riemann_left" or "riemann_right"."""
    if steps < 1:
        raise ExplainError(f"steps must be >= 1, got {steps}")
    if method == "gausslegendre":
        points, weights = np.polynomial.legendre.leggauss(steps)
        return (points + 1) / 2, weights / 2
    if method == "riemann_trapezoid":
        if steps < 2:
            raise ExplainError("riemann_trapezoid needs at least 2 steps")
        alphas = np.linspace(0.0, 1.0, steps)
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return alphas, weights
    if method in ("riemann_middle", "riemann_left", "riemann_right"):
        offset = {"riemann_middle": 0.5, "riemann_left": 0.0, "riemann_right": 1.0}[method]
        return (np.arange(steps) + offset) / steps, np.full(steps, 1.0 / steps)
    raise ExplainError(
        f"unknown integration method {method!r}: gausslegendre, riemann_trapezoid, "
        "riemann_middle, riemann_left, riemann_right"
    )


def integrated_gradients(
    model: GradientModel | ModelLike,
    x: np.ndarray,
    target: Target = None,
    *,
    baseline: np.ndarray | float = 0.0,
    steps: int = 50,
    method: str = "gausslegendre",
    extra: Mapping[str, np.ndarray] | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> Attribution:
    """Integrated gradients along the straight path from ``baseline`` to ``x``.

    ``baseline`` broadcasts against ``x`` (default: zeros). All ``len(x) * steps`` path points
    run in chunks of ``batch_size`` (across examples). The result's ``delta`` is the
    completeness gap per example, which shrinks as ``steps`` grows.
    """
    gm, x, targets = prepare_inputs(model, x, target, extra, batch_size)
    base = np.broadcast_to(np.asarray(baseline, dtype=gm.dtype), x.shape)
    alphas, weights = quadrature(steps, method)
    # The endpoints give f(x) and f(baseline) for the completeness check.
    ends = np.concatenate([x, base])
    end_targets = np.concatenate([targets, targets])
    end_scores = gm.predict(ends, extra=_repeat_extra(extra, 2, tile=True), batch_size=batch_size)
    flat = end_scores.reshape(len(ends), -1)[np.arange(len(ends)), end_targets]
    scores, base_scores = flat[: len(x)], flat[len(x) :]
    # All len(x) * steps path points stream through full chunks, whatever example they
    # belong to: point k is example k // steps at alpha[k % steps].
    total = len(x) * steps
    chunk = gm.fixed_batch or max(1, batch_size)
    shape = (-1,) + (1,) * (x.ndim - 1)
    avg = np.zeros(x.shape, dtype=np.float64)
    with progress_bar(total, "integrated gradients", progress) as advance:
        for lo in range(0, total, chunk):
            k = np.arange(lo, min(total, lo + chunk))
            example, step = k // steps, k % steps
            a = alphas[step].reshape(shape).astype(gm.dtype)
            path = base[example] + a * (x[example] - base[example])
            sub_extra = (
                None if extra is None else {n: np.asarray(v)[example] for n, v in extra.items()}
            )
            _, grads, _ = gm.target_gradients(
                path, targets[example], extra=sub_extra, batch_size=chunk, progress=advance
            )
            weighted = grads.astype(np.float64) * weights[step].reshape(shape)  # type: ignore[union-attr]
            np.add.at(avg, example, weighted)
    attributions = ((x - base) * avg).astype(x.dtype)
    delta = attributions.reshape(len(x), -1).sum(axis=1, dtype=np.float64) - (scores - base_scores)
    return Attribution("integrated_gradients", attributions, targets, scores, delta, base_scores)


def smoothgrad(
    model: GradientModel | ModelLike,
    x: np.ndarray,
    target: Target = None,
    *,
    samples: int = 25,
    noise: float = 0.15,
    squared: bool = False,
    seed: int = 0,
    extra: Mapping[str, np.ndarray] | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> Attribution:
    """SmoothGrad: the gradient averaged over ``samples`` copies of each input with Gaussian
    noise of standard deviation ``noise * (max(x) - min(x))`` (per example); ``squared``
    averages squared gradients (SmoothGrad-Squared)."""
    gm, x, targets = prepare_inputs(model, x, target, extra, batch_size)
    rng = np.random.default_rng(seed)
    out = np.zeros_like(x)
    scores = np.zeros(len(x))
    with progress_bar(len(x) * samples, "smoothgrad", progress) as advance:
        for i in range(len(x)):
            sigma = noise * float(x[i].max() - x[i].min())
            noisy = x[i] + rng.normal(0.0, sigma, (samples, *x[i].shape)).astype(gm.dtype)
            s, grads, _ = gm.target_gradients(
                noisy,
                np.full(samples, targets[i]),
                extra=_select_extra(extra, i, samples),
                batch_size=batch_size,
                progress=advance,
            )
            out[i] = (grads**2 if squared else grads).mean(axis=0)  # type: ignore[operator]
            scores[i] = s.mean()
    return Attribution("smoothgrad", out, targets, scores)


def grad_cam(
    model: GradientModel | ModelLike,
    x: np.ndarray,
    target: Target = None,
    *,
    layer: str,
    relu: bool = True,
    upsample: bool = True,
    extra: Mapping[str, np.ndarray] | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> Attribution:
    """Grad-CAM on the named layer (a ``[N, K, h, w]`` tensor, or ``[N, K, ...]``).

    Channel weights are the spatial means of the layer's gradient; the map is
    ``ReLU(sum_k w_k A_k)`` (``relu=False`` keeps negative evidence), bilinearly resized to the
    input's spatial size when ``upsample`` and the input is ``[N, C, H, W]``.
    """
    gm, x, targets = prepare_inputs(model, x, target, extra, batch_size)
    with progress_bar(len(x), "grad-cam", progress) as advance:
        scores, _, layers = gm.target_gradients(
            x,
            targets,
            extra=extra,
            layers=[layer],
            wrt_input=False,
            batch_size=batch_size,
            progress=advance,
        )
    act, grad = layers[layer]
    if act.ndim < 3:
        raise ExplainError(f"layer {layer!r} has shape {act.shape}: Grad-CAM needs [N, K, ...]")
    spatial = tuple(range(2, act.ndim))
    weights = grad.mean(axis=spatial, keepdims=True)
    cam = (weights * act).sum(axis=1)
    if relu:
        cam = np.maximum(cam, 0)
    if upsample and x.ndim == 4 and cam.ndim == 3:
        cam = resize_bilinear(cam, x.shape[2:])
    return Attribution("grad_cam", cam, targets, scores)


def resize_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``[N, h, w]`` maps to ``[N, H, W]`` bilinearly with half-pixel centres (torch's
    ``interpolate(mode="bilinear", align_corners=False)``)."""
    n, h, w = maps.shape
    big_h, big_w = size

    def grid(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = np.clip((np.arange(dst) + 0.5) * (src / dst) - 0.5, 0, None)
        lo = np.minimum(np.floor(pos).astype(int), src - 1)
        hi = np.minimum(lo + 1, src - 1)
        return lo, hi, pos - lo

    y0, y1, fy = grid(h, big_h)
    x0, x1, fx = grid(w, big_w)
    top = maps[:, y0][:, :, x0] * (1 - fx) + maps[:, y0][:, :, x1] * fx
    bottom = maps[:, y1][:, :, x0] * (1 - fx) + maps[:, y1][:, :, x1] * fx
    return (top * (1 - fy)[:, None] + bottom * fy[:, None]).astype(maps.dtype)


def _select_extra(extra, i: int, count: int) -> dict[str, np.ndarray] | None:
    """Example ``i``'s other inputs repeated ``count`` times (one per path point/sample)."""
    if extra is None:
        return None
    return {k: np.repeat(np.asarray(v)[i : i + 1], count, axis=0) for k, v in extra.items()}


def _repeat_extra(extra, times: int, tile: bool) -> dict[str, np.ndarray] | None:
    if extra is None:
        return None
    return {
        k: np.concatenate([np.asarray(v)] * times) if tile else np.repeat(v, times, axis=0)
        for k, v in extra.items()
    }
