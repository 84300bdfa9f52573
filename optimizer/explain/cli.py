"""``graphopt explain ...``: attributions, heatmaps and gradient graphs from the command line.

Registered on the main app in :mod:`optimizer.cli` as the ``explain`` sub-command; errors
follow that module's conventions (one line on stderr, exit 2 for bad input, nothing written).

- ``graphopt explain attribute MODEL INPUT -m METHOD [-t TARGET] [-o attr.npy] [--heatmap
  heat.png]``: one attribution method on the examples in INPUT (``.npy``; ``.npz`` with the
  model's other inputs too; or a ``.png``/``.jpg`` image, scaled to [0, 1]).
- ``graphopt explain layers MODEL``: named float tensors usable as Grad-CAM layers or as
  ``--input`` (embeddings), with their shapes.
- ``graphopt explain check MODEL``: whether the gradient graph can be built (names every op
  on the path that has no gradient rule).
- ``graphopt explain vjp MODEL -o grad.onnx``: write the vector-Jacobian-product graph.
- ``graphopt explain ops``: the ops the autodiff pass differentiates.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from optimizer.explain.errors import ExplainError

# Not imported from optimizer.cli: it imports this module to register the sub-app.
out = Console(soft_wrap=True)


def _guarded(action) -> None:
    """optimizer.cli's conventions: one line on stderr and an exit status for any error."""
    from optimizer.cli import _guarded as guarded

    guarded(action)

app = typer.Typer(
    name="explain",
    help="Explain model predictions: gradients (IR autodiff), attributions, heatmaps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

METHODS = (
    "saliency", "input-x-gradient", "integrated-gradients", "smoothgrad", "grad-cam",
    "occlusion", "rise", "kernel-shap",
)  # fmt: skip

ModelArg = Annotated[Path, typer.Argument(help="The ONNX model.")]
InputName = Annotated[
    str | None,
    typer.Option("--input", help="Tensor to attribute to: a float input or intermediate."),
]
OutputName = Annotated[str | None, typer.Option("--output-name", help="Model output to explain.")]
InputShapes = Annotated[
    list[str] | None,
    typer.Option("--input-shape", help="Fix an input's shape: NAME:D1,D2,... (repeatable)."),
]


def _ints(text: str | None, what: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ExplainError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise ExplainError(f"{what} must be positive integers, got {text!r}")
    return values


def _shapes(specs: list[str] | None):
    if not specs:
        return None
    from optimizer.runtime import parse_input_shapes

    return parse_input_shapes(specs)


def _load_examples(path: Path, gm) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """The attributed input (with a batch axis) and the other inputs, from a file."""
    if not path.is_file():
        raise ExplainError(f"{path}: no such file")
    suffix = path.suffix.lower()
    extra = None
    try:
        if suffix == ".npy":
            x = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            if gm.input not in arrays:
                raise ExplainError(
                    f"{path} has no array named {gm.input!r} (it has: {', '.join(arrays)})"
                )
            x = arrays.pop(gm.input)
            extra = arrays or None
        elif suffix in (".png", ".jpg", ".jpeg"):
            x = _image(path, gm)
        else:
            raise ExplainError(f"{path}: expected .npy, .npz, .png or .jpg")
    except (OSError, ValueError) as exc:
        raise ExplainError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    rank = len(gm.input_type.shape or ())
    if x.ndim == rank - 1:
        x = x[None]
        extra = {k: v[None] for k, v in extra.items()} if extra else extra
    return x.astype(gm.dtype), extra


def _image(path: Path, gm) -> np.ndarray:
    from matplotlib.image import imread

    img = np.asarray(imread(path), dtype=np.float64)
    if img.max() > 1.0:
        img = img / 255.0
    img = img[..., :3] if img.ndim == 3 else img[..., None]
    shape = gm.input_type.shape or ()
    if len(shape) != 4:
        raise ExplainError(f"{path}: an image input needs a [N, C, H, W] model input")
    channels = shape[1]
    if channels == 1 and img.shape[-1] == 3:
        img = img.mean(axis=-1, keepdims=True)
    elif channels == 3 and img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return np.moveaxis(img, -1, 0)[None]


def _target(text: str | None):
    if text is None:
        return None
    parts = _ints_signed(text)
    return parts[0] if len(parts) == 1 else tuple(parts)


def _ints_signed(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ExplainError(f"target must be an int or comma-separated ints, got {text!r}") from None


def _save_npy(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".attr-", suffix=".npy", dir=path.parent)
    os.close(fd)
    try:
        np.save(tmp, array)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@app.command("attribute")
def attribute(
    model: ModelArg,
    inputs: Annotated[Path, typer.Argument(help="Examples: .npy, .npz or an image.")],
    method: Annotated[
        str, typer.Option("-m", "--method", help="One of: " + ", ".join(METHODS) + ".")
    ] = "integrated-gradients",
    target: Annotated[
        str | None,
        typer.Option("-t", "--target", help="Output entry to explain (default: the argmax)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the attributions (.npy).")
    ] = None,
    heatmap: Annotated[
        Path | None,
        typer.Option("--heatmap", help="Write a PNG over the image (one per example: _N)."),
    ] = None,
    layer: Annotated[str | None, typer.Option("--layer", help="Grad-CAM layer.")] = None,
    steps: Annotated[int, typer.Option(help="Integrated gradients: path points.")] = 50,
    baseline: Annotated[float, typer.Option(help="Baseline value (IG, perturbations).")] = 0.0,
    samples: Annotated[int, typer.Option(help="SmoothGrad / KernelSHAP samples.")] = 25,
    masks: Annotated[int, typer.Option(help="RISE: number of masks.")] = 1000,
    window: Annotated[
        str | None, typer.Option(help="Occlusion window per example dim, e.g. 1,4,4.")
    ] = None,
    stride: Annotated[str | None, typer.Option(help="Occlusion stride, e.g. 1,2,2.")] = None,
    grid: Annotated[int, typer.Option(help="KernelSHAP: superpixel grid size.")] = 4,
    batch_size: Annotated[int, typer.Option(help="Examples (or masks) per onnxruntime run.")] = 32,
    input_name: InputName = None,
    output_name: OutputName = None,
    input_shapes: InputShapes = None,
    signed: Annotated[bool, typer.Option(help="Heatmap keeps the sign (red/blue).")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Attribute a model's output to its input with one method."""

    def action() -> None:
        from optimizer.explain import attribution, perturbation
        from optimizer.explain.gradients import GradientModel

        if method not in METHODS:
            raise ExplainError(f"unknown method {method!r}: expected one of {', '.join(METHODS)}")
        if method == "grad-cam" and layer is None:
            raise ExplainError(
                "grad-cam needs --layer (`graphopt explain layers MODEL` lists them)"
            )
        if output is not None and output.suffix != ".npy":
            raise ExplainError(f"--output {output}: attributions are written as .npy")
        if heatmap is not None and heatmap.suffix.lower() != ".png":
            raise ExplainError(f"--heatmap {heatmap}: heatmaps are written as .png")
        if not model.is_file():
            raise ExplainError(f"{model}: no such file")
        gm = GradientModel(
            model, input=input_name, output=output_name, input_shapes=_shapes(input_shapes)
        )
        x, extra = _load_examples(inputs, gm)
        tgt = _target(target)
        common = {"extra": extra, "progress": progress}
        if method == "saliency":
            res = attribution.saliency(gm, x, tgt, batch_size=batch_size, **common)
        elif method == "input-x-gradient":
            res = attribution.input_x_gradient(gm, x, tgt, batch_size=batch_size, **common)
        elif method == "integrated-gradients":
            res = attribution.integrated_gradients(
                gm, x, tgt, baseline=baseline, steps=steps, batch_size=batch_size, **common
            )
        elif method == "smoothgrad":
            res = attribution.smoothgrad(
                gm, x, tgt, samples=samples, batch_size=batch_size, **common
            )
        elif method == "grad-cam":
            res = attribution.grad_cam(gm, x, tgt, layer=layer, batch_size=batch_size, **common)  # type: ignore[arg-type]
        elif method == "occlusion":
            win = _ints(window, "--window") or (1,) * (x.ndim - 1)
            res = perturbation.occlusion(
                gm, x, tgt, window=win, stride=_ints(stride, "--stride"), baseline=baseline,
                masks_per_run=batch_size, **common,
            )  # fmt: skip
        elif method == "rise":
            res = perturbation.rise(
                gm, x, tgt, masks=masks, baseline=baseline, masks_per_run=batch_size, **common
            )
        else:
            res = perturbation.kernel_shap(
                gm, x, tgt, grid=grid, samples=samples, baseline=baseline,
                masks_per_run=batch_size, **common,
            )  # fmt: skip
        written = []
        if heatmap is not None:
            from optimizer.explain.heatmap import save_heatmap

            for i in range(len(x)):
                path = heatmap if len(x) == 1 else heatmap.with_name(f"{heatmap.stem}_{i}.png")
                image = x[i] if x.ndim == 4 else None
                save_heatmap(res.attributions[i], path, image=image, signed=signed,
                             title=f"{res.method}, target {int(res.targets[i])}")  # fmt: skip
                written.append(str(path))
        if output is not None:
            _save_npy(res.attributions, output)
            written.insert(0, str(output))
        summary = {
            "method": res.method,
            "examples": len(x),
            "targets": [int(t) for t in res.targets],
            "scores": None if res.scores is None else [float(s) for s in res.scores],
            "completeness_gap": None if res.delta is None else [float(d) for d in res.delta],
            "written": written,
        }
        if as_json:
            out.print(json.dumps(summary, indent=2), markup=False, highlight=False)
        else:
            for i, t in enumerate(summary["targets"]):
                line = f"example {i}: target {t}"
                if summary["scores"] is not None:
                    line += f", score {summary['scores'][i]:.6g}"
                if summary["completeness_gap"] is not None:
                    line += f", completeness gap {summary['completeness_gap'][i]:.3g}"
                out.print(line, markup=False, highlight=False)
            for path in written:
                out.print(f"wrote {path}", markup=False, highlight=False)

    _guarded(action)


@app.command("layers")
def layers(
    model: ModelArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List named float tensors (Grad-CAM layers, --input candidates) with their shapes."""

    def action() -> None:
        from optimizer.explain.gradients import load_graph
        from optimizer.ir import TensorType

        if not model.is_file():
            raise ExplainError(f"{model}: no such file")
        graph = load_graph(model)
        rows = []
        for node in graph.nodes():
            for value in node.outputs:
                name = graph.value_names.get(value)
                if name and isinstance(value.type, TensorType) and value.type.dtype.is_float:
                    shape = value.type.shape
                    dims = "?" if shape is None else "x".join(str(d) for d in shape)
                    rows.append({"name": name, "op": node.op, "shape": dims})
        if as_json:
            out.print(json.dumps(rows, indent=2), markup=False, highlight=False)
            return
        for row in rows:
            out.print(f"{row['name']}\t{row['op']}\t{row['shape']}", markup=False, highlight=False)

    _guarded(action)


@app.command("check")
def check(
    model: ModelArg,
    input_name: InputName = None,
    output_name: OutputName = None,
) -> None:
    """Check that the gradient graph can be built (exit 2 naming unsupported ops if not)."""

    def action() -> None:
        from optimizer.explain.gradients import GradientModel

        if not model.is_file():
            raise ExplainError(f"{model}: no such file")
        gm = GradientModel(model, input=input_name, output=output_name)
        gg = gm.vjp_graph()
        count = len(gg.graph.nodes())
        out.print(
            f"ok: d {gg.output} / d {gm.input} builds ({count} nodes)",
            markup=False,
            highlight=False,
        )

    _guarded(action)


@app.command("vjp")
def vjp(
    model: ModelArg,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write it.")],
    wrt: Annotated[
        list[str] | None, typer.Option("--wrt", help="Input to differentiate (repeatable).")
    ] = None,
    layer: Annotated[
        list[str] | None, typer.Option("--layer", help="Also the gradient of this tensor.")
    ] = None,
    output_name: OutputName = None,
) -> None:
    """Write the vector-Jacobian-product graph: extra input ``<output>.cotangent``, extra
    outputs ``<name>.grad``."""

    def action() -> None:
        from optimizer import onnx_io
        from optimizer.explain.autodiff import build_vjp
        from optimizer.explain.gradients import load_graph

        if not model.is_file():
            raise ExplainError(f"{model}: no such file")
        if output.resolve() == model.resolve():
            raise ExplainError(f"{output}: refusing to overwrite the input model")
        gg = build_vjp(load_graph(model), wrt, output=output_name, intermediates=layer or [])
        onnx_io.save(gg.graph, output)
        out.print(
            f"wrote {output}: cotangent input {gg.cotangent!r}, gradient outputs "
            + ", ".join(repr(v) for v in gg.gradients.values()),
            markup=False,
            highlight=False,
        )

    _guarded(action)


@app.command("ops")
def ops() -> None:
    """List the ops the autodiff pass can differentiate."""

    def action() -> None:
        from optimizer.explain.autodiff import supported_ops

        out.print(" ".join(supported_ops()), markup=False, highlight=False)

    _guarded(action)
