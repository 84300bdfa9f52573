"""The checks a compiled graph passes before it is used.

- :func:`verify_outputs` (option ``verify``): the model as it will run (optimized, in its
  final session, onnxruntime's fusions included) against the exported model's outputs on the
  same inputs (onnxruntime, optimizations off, same device); :func:`reference_outputs`
  computes those, in a worker thread while the optimizer runs (:data:`REFERENCE_POOL`).
- :func:`verify_seeded`: the same for graphs that draw random numbers, on copies of both
  models with every random op seeded alike.
- :func:`mismatch` (option ``check``): one output against eager PyTorch's.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import onnx
import torch

from optimizer.errors import GraphoptError
from optimizer.torch_backend.export import ExportedGraph
from optimizer.torch_backend.options import BackendOptions
from optimizer.torch_backend.session import OrtRunner


class VerificationError(GraphoptError):
    """The optimized model differs from the exported one (the graph then runs eagerly)."""


#: One worker computes reference outputs while the optimizer runs (compiled._open_session).
REFERENCE_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="graphopt-reference")


def reference_outputs(
    path: str, exported: ExportedGraph, feeds: Sequence[torch.Tensor], cuda: bool
) -> dict[str, Any]:
    """The exported model's (at ``path``) outputs on ``feeds``, onnxruntime's own
    optimizations off."""
    from optimizer import runtime

    names = [vi.name for vi in exported.model.graph.input]
    feed = {name: to_numpy(t) for name, t in zip(names, feeds)}
    session = runtime.make_session(
        path,
        device="cuda" if cuda else "cpu",
        options=runtime.CHECK_OPTIONS,
        label="the exported model",
    )
    return runtime.run(session, feed, label="the exported model")


#: ONNX ops that draw random numbers (Dropout only in training mode, but seeding it is
#: harmless either way), with the type of their ``seed`` attribute.
_RANDOM_OPS = {
    "Dropout": int,
    "RandomUniform": float,
    "RandomUniformLike": float,
    "RandomNormal": float,
    "RandomNormalLike": float,
    "Bernoulli": float,
    "Multinomial": float,
}


def draws_random_numbers(model: onnx.ModelProto) -> bool:
    return any(
        node.op_type in _RANDOM_OPS and node.domain in ("", "ai.onnx") for node in model.graph.node
    )


def _seeded_copy(path: str) -> str:
    """A copy of the model at ``path`` (beside it, sharing its external data) whose random
    ops have a fixed seed, derived from their first output's name: the exported and the
    optimized model then draw the same numbers where they have the same random ops."""
    model = onnx.load(path, load_external_data=False)
    for node in model.graph.node:
        kind = _RANDOM_OPS.get(node.op_type)
        if kind is None or node.domain not in ("", "ai.onnx") or not node.output:
            continue
        seed = zlib.crc32(node.output[0].encode()) % 65521
        kept = [a for a in node.attribute if a.name != "seed"]
        del node.attribute[:]
        node.attribute.extend([*kept, onnx.helper.make_attribute("seed", kind(seed))])
    seeded = path[: -len(".onnx")] + ".seeded.onnx"
    onnx.save(model, seeded)
    return seeded


def verify_seeded(
    source: str,
    candidate: str,
    exported: ExportedGraph,
    feeds: Sequence[torch.Tensor],
    options: BackendOptions,
    cuda: bool,
) -> None:
    """Verification of a graph that draws random numbers: the exported and the optimized
    model, random ops seeded alike, compared on onnxruntime with its optimizations off."""
    from optimizer import runtime

    names = [vi.name for vi in exported.model.graph.input]
    report = runtime.compare_models(
        _seeded_copy(source),
        _seeded_copy(candidate),
        inputs={name: to_numpy(t) for name, t in zip(names, feeds)},
        rtol=options.rtol,
        atol=options.atol,
        device="cuda" if cuda else "cpu",
    )
    if not report.ok:
        raise VerificationError(
            f"the optimized model differs from the exported one: {report.summary()}"
        )


def save_with_external_data(model: onnx.ModelProto, path: str) -> None:
    """Save ``model`` at ``path``, every tensor of 1 KiB or more in ``<path>.data``."""
    onnx.save(
        model,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=os.path.basename(path) + ".data",
        size_threshold=1024,
    )


def verify_outputs(
    expected: dict[str, Any],
    runner: OrtRunner,
    feeds: Sequence[torch.Tensor],
    options: BackendOptions,
) -> None:
    """Check the model as it will run (optimized, in ``runner``'s session) against the
    exported model's outputs ``expected`` (onnxruntime, optimizations off, same device, same
    inputs). Reusing the final session spares a second session for the candidate: seconds
    for a model of BERT-base's size."""
    from optimizer import runtime

    got = runner(list(feeds))
    for name, value in zip(runner.output_names, got):
        if name not in expected:
            raise VerificationError(f"the optimized model has an output {name!r} the export lacks")
        result = runtime.compare_outputs(
            name, expected[name], to_numpy(value), rtol=options.rtol, atol=options.atol
        )
        if not result.ok:
            raise VerificationError(
                f"the optimized model differs from the exported one: {result.reason}"
            )


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def mismatch(expected: Any, got: Any, rtol: float, atol: float) -> str | None:
    """Why ``got`` is not ``expected`` (None when equal within tolerance)."""
    if not isinstance(expected, torch.Tensor):
        return None if expected == got else f"{got!r} != {expected!r}"
    if not isinstance(got, torch.Tensor):
        return f"got a {type(got).__name__}, expected a tensor"
    if expected.shape != got.shape:
        return f"shape {tuple(got.shape)} != {tuple(expected.shape)}"
    if expected.dtype != got.dtype:
        return f"dtype {got.dtype} != {expected.dtype}"
    e, g = expected.detach().cpu(), got.detach().cpu()
    if e.is_floating_point() or e.is_complex():
        if torch.allclose(g, e, rtol=rtol, atol=atol, equal_nan=True):
            return None
        return f"max abs error {float((g - e).abs().max()):.3g}"
    return None if torch.equal(e, g) else "values differ"
