"""The Python API: :func:`optimize` a model in memory, :func:`optimize_file` on disk.

Both check the optimized model numerically against the original before
handing it out (unless told not to) and never modify their input.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import onnx

from optimizer import onnx_io, runtime
from optimizer.errors import CheckUnavailableError, GraphoptError
from optimizer.info import ModelStats, graph_stats
from optimizer.ir import Graph
from optimizer.passes import DEFAULT_SIZE_LIMIT, PASSES, PassResult, run_passes

#: Default tolerances of the numeric check (relative, absolute).
DEFAULT_RTOL = 1e-4
DEFAULT_ATOL = 1e-5


@dataclass(frozen=True)
class OptimizeOptions:
    """Every option of an optimization run; each is documented in docs/usage.md.

    - ``passes``: clean-up passes to run, in order (see :data:`optimizer.passes.PASSES`).
    - ``fold_size_limit``: largest tensor in bytes constant folding may create.
    - ``input_shapes``: fix named inputs to static shapes (specialises the model).
    - ``check``: compare the result with the original on onnxruntime before returning it.
    - ``rtol``/``atol``: tolerances of that check.
    - ``device``: where the check runs ("cpu", "cuda" or "auto").
    - ``check_samples``: how many random input sets the check uses.
    """

    passes: Sequence[str] = PASSES
    fold_size_limit: int = DEFAULT_SIZE_LIMIT
    input_shapes: Mapping[str, Sequence[int]] | None = None
    check: bool = True
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    device: str = "cpu"
    check_samples: int = 1


@dataclass
class OptimizeReport:
    """What an optimization did: statistics before and after, passes, timing, check result."""

    before: ModelStats
    after: ModelStats
    passes: list[PassResult]
    seconds: float
    checked: bool
    max_abs_error: float | None = None
    size_before: int | None = None
    size_after: int | None = None
    output_path: str | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """A JSON-ready dict (the CLI's ``--json`` output)."""
        return {
            "before": self.before.to_json(),
            "after": self.after.to_json(),
            "passes": [vars(p) for p in self.passes],
            "seconds": round(self.seconds, 4),
            "checked": self.checked,
            "max_abs_error": self.max_abs_error,
            "size_before": self.size_before,
            "size_after": self.size_after,
            "output": self.output_path,
        }


def stored_stats(proto: onnx.ModelProto, graph: Graph) -> ModelStats:
    """Statistics of a model file as stored: nodes, op histogram and parameters count what
    the file holds (before the importer merges duplicates and drops dead nodes); FLOPs,
    types and opsets come from ``graph``, its import."""
    histogram, params = onnx_io.proto_summary(proto)
    return replace(
        graph_stats(graph), nodes=sum(histogram.values()), op_histogram=histogram, parameters=params
    )


def _optimize_graph(graph: Graph, options: OptimizeOptions) -> tuple[Graph, list[PassResult]]:
    return run_passes(graph, options.passes, fold_size_limit=options.fold_size_limit)


def optimize(
    model: onnx.ModelProto | str | os.PathLike, options: OptimizeOptions | None = None, **kwargs
) -> onnx.ModelProto:
    """Optimize an ONNX model and return the optimized ``onnx.ModelProto``.

    ``model`` is a ModelProto (never modified) or a path. Options are an
    :class:`OptimizeOptions` or its fields as keyword arguments. With
    ``check=True`` (the default) the result is compared with the original on
    onnxruntime and :class:`~optimizer.errors.CheckFailedError` is raised
    when they differ. Models beyond protobuf's 2 GB limit cannot be returned
    in memory: use :func:`optimize_file`.
    """
    options = _options(options, kwargs)
    if isinstance(model, onnx.ModelProto):
        graph, _ = onnx_io.import_model(model, None, input_shapes=options.input_shapes)
    else:
        graph, _ = onnx_io.import_model(
            onnx_io.load_proto(model), onnx_io.base_dir_of(model), input_shapes=options.input_shapes
        )
    graph, _ = _optimize_graph(graph, options)
    result = onnx_io.to_proto(graph)
    if options.check:
        _check(model, result, options)
    return result


def _options(options: OptimizeOptions | None, kwargs: dict) -> OptimizeOptions:
    if options is not None and kwargs:
        raise TypeError("pass either an OptimizeOptions or keyword options, not both")
    return options or OptimizeOptions(**kwargs)


def _check(reference, candidate, options: OptimizeOptions) -> runtime.EquivalenceReport:
    try:
        return _compare(reference, candidate, options)
    except CheckUnavailableError as exc:
        raise CheckUnavailableError(
            f"{exc} (the numeric check needs it; --no-check skips it)"
        ) from exc


def _compare(reference, candidate, options: OptimizeOptions) -> runtime.EquivalenceReport:
    return runtime.assert_equivalent(
        reference if not isinstance(reference, os.PathLike) else os.fspath(reference),
        candidate if not isinstance(candidate, os.PathLike) else os.fspath(candidate),
        input_shapes=options.input_shapes,
        rtol=options.rtol,
        atol=options.atol,
        device=options.device,
        num_samples=options.check_samples,
    )


def default_output_path(path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.opt.onnx`` (onnxsim's convention, but never the input)."""
    path = Path(path)
    stem = path.name[: -len(".onnx")] if path.name.endswith(".onnx") else path.name
    return path.with_name(f"{stem}.opt.onnx")


def optimize_file(
    src: str | os.PathLike,
    dst: str | os.PathLike | None = None,
    options: OptimizeOptions | None = None,
    *,
    in_place: bool = False,
    external_data: bool | None = None,
    **kwargs,
) -> OptimizeReport:
    """Optimize the model file ``src`` into ``dst`` (default: ``<src>.opt.onnx``).

    Weights stream from ``src`` to ``dst`` without being held in memory. The
    result is written to a temporary folder beside ``dst``, checked against
    ``src`` there, and only then moved into place; on any failure nothing
    at ``dst`` changes. ``dst`` may equal ``src`` only with ``in_place=True``.
    """
    options = _options(options, kwargs)
    start = time.perf_counter()
    src_path = Path(src)
    dst_path = src_path if in_place else Path(dst) if dst is not None else default_output_path(src)
    if not in_place and dst_path.resolve() == src_path.resolve() and src_path.exists():
        raise GraphoptError(f"{dst_path}: refusing to overwrite the input; pass --in-place")
    proto = onnx_io.load_proto(src_path)
    graph, imported = onnx_io.import_model(
        proto, onnx_io.base_dir_of(src_path), input_shapes=options.input_shapes
    )
    size_before = onnx_io.stored_size(src_path, proto)
    before = stored_stats(proto, graph)
    del proto
    # Dead code and duplicate nodes disappear as the IR is built: report that as a pass.
    structural = PassResult(
        "dce+cse (import)", imported.onnx_nodes, imported.ir_nodes, time.perf_counter() - start
    )
    graph, passes = _optimize_graph(graph, options)
    passes.insert(0, structural)
    after = graph_stats(graph)
    staging = Path(tempfile.mkdtemp(prefix=".graphopt-", dir=dst_path.parent.resolve()))
    try:
        staged = staging / dst_path.name
        onnx_io.save(graph, staged, external_data=external_data)
        del graph  # release lazily mapped weights of src before it may be replaced
        report = None
        if options.check:
            report = _check(src_path, staged, options)
        for extra in sorted(staging.iterdir(), key=lambda p: p == staged):
            os.replace(extra, dst_path.parent / extra.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return OptimizeReport(
        before=before,
        after=after,
        passes=passes,
        seconds=time.perf_counter() - start,
        checked=options.check,
        max_abs_error=max((o.max_abs_err for o in report.outputs), default=0.0) if report else None,
        size_before=size_before,
        size_after=onnx_io.stored_size(dst_path, onnx_io.load_proto(dst_path)),
        output_path=str(dst_path),
    )
