"""Heatmaps of attributions as PNG files, drawn over the input image (matplotlib, Agg).

matplotlib is imported only here and only when a heatmap is drawn, so the rest of the
explanation module works without it (it is in the ``explain`` extra).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from optimizer.explain.errors import ExplainError


def to_map(attribution: np.ndarray, *, signed: bool = False) -> np.ndarray:
    """A 2-D map from an attribution of one example: ``[C, H, W]`` sums the channels (absolute
    values unless ``signed``), ``[H, W]`` is kept; anything else is refused."""
    a = np.asarray(attribution, dtype=np.float64)
    if a.ndim == 3:
        a = a.sum(axis=0) if signed else np.abs(a).sum(axis=0)
    elif a.ndim == 2:
        a = a if signed else np.abs(a)
    else:
        raise ExplainError(
            f"a heatmap needs an image attribution ([C, H, W] or [H, W]), got {a.shape}"
        )
    return a


def to_image(image: np.ndarray) -> np.ndarray:
    """An image for display: ``[C, H, W]`` (C = 1 or 3) or ``[H, W, C]`` or ``[H, W]``, scaled to
    [0, 1] per image; returns ``[H, W]`` (gray) or ``[H, W, 3]``."""
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3):
        raise ExplainError(f"cannot display an image of shape {image.shape}")
    lo, hi = float(img.min()), float(img.max())
    return (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)


def save_heatmap(
    attribution: np.ndarray,
    path: str | os.PathLike,
    *,
    image: np.ndarray | None = None,
    signed: bool = False,
    alpha: float = 0.55,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Write a PNG of ``attribution`` (one example) over ``image`` to ``path`` atomically.

    Unsigned maps use the ``inferno`` colormap from 0; ``signed`` maps use ``bwr`` centred on
    0 (red: evidence for the target, blue: against). Returns the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    heat = to_map(attribution, signed=signed)
    fig = Figure(figsize=(4, 4), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 0.92 if title else 1))
    ax.axis("off")
    if image is not None:
        img = to_image(image)
        if img.shape[:2] != heat.shape:
            raise ExplainError(f"image {img.shape[:2]} and attribution {heat.shape} differ in size")
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
    alpha = alpha if image is not None else 1.0
    if signed:
        bound = float(np.abs(heat).max()) or 1.0
        ax.imshow(heat, cmap="bwr", vmin=-bound, vmax=bound, alpha=alpha)
    else:
        ax.imshow(heat, cmap="inferno", vmin=0, alpha=alpha)
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".heatmap-", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
