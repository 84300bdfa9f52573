"""The Python API: :func:`optimize` a model in memory, :func:`optimize_file` on disk.

Both check the optimized model numerically against the original before
handing it out (unless told not to) and never modify their input.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

from optimizer import onnx_io, runtime
from optimizer.errors import CheckUnavailableError, GraphoptError
from optimizer.info import ModelStats, graph_stats
from optimizer.ir import Graph
from optimizer.passes import (
    DEFAULT_SIZE_LIMIT,
    PASSES,
    SEARCH_ALGORITHMS,
    PassResult,
    SearchSettings,
    run_passes,
)

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
    - ``search``: the search algorithm of the apply-rules pass (see :mod:`optimizer.search`;
      ``auto`` picks by graph size).
    - ``time_limit``: seconds the search may take (all of its rounds together).
    - ``cost_model``: what the search minimises: ``analytic`` (FLOPs, bytes and a per-kernel
      overhead, with onnxruntime's fusions priced in) or ``measured`` (each distinct op timed
      on onnxruntime once, cached on disk).
    - ``seed``: the seed of searches that sample.
    - ``guard``: when the rule search rewrote the model, time the result against the clean-up
      passes' result on onnxruntime (ORT_ENABLE_ALL, interleaved) and keep the clean-up
      result unless the rewrites are measured at least :data:`GUARD_MIN_SPEEDUP` times faster.
    """

    passes: Sequence[str] = PASSES
    fold_size_limit: int = DEFAULT_SIZE_LIMIT
    input_shapes: Mapping[str, Sequence[int]] | None = None
    check: bool = True
    rtol: float = DEFAULT_RTOL
    atol: float = DEFAULT_ATOL
    device: str = "cpu"
    check_samples: int = 1
    search: str = "auto"
    time_limit: float = 10.0
    cost_model: str = "analytic"
    seed: int = 0
    guard: bool = True

    def __post_init__(self) -> None:
        if self.search not in SEARCH_ALGORITHMS:
            raise GraphoptError(
                f"unknown search algorithm {self.search!r}; known: {', '.join(SEARCH_ALGORITHMS)}"
            )
        if self.cost_model not in COST_MODELS:
            raise GraphoptError(
                f"unknown cost model {self.cost_model!r}; known: {', '.join(COST_MODELS)}"
            )
        if not self.time_limit > 0:
            raise GraphoptError(f"time limit must be positive, got {self.time_limit}")


#: The guard keeps an optimized model only when it is measured at least this much faster
#: (a gain below 1% is inside the protocol's noise on a busy machine).
GUARD_MIN_SPEEDUP = 1.01
#: Interleaved rounds the guard times (each at least 30 ms per model).
GUARD_ROUNDS = 10


#: The guard's choices: the rewritten model, or the clean-up passes' result.
REWRITTEN, CLEANED = "rewritten", "cleaned"


@dataclass(frozen=True)
class GuardDecision:
    """What the guard decided: ``kept`` is :data:`REWRITTEN` or :data:`CLEANED`; ``speedup``
    the measured median speedup of the rewritten model over the cleaned one (None when the
    guard did not time them)."""

    kept: str
    speedup: float | None
    reason: str

    def to_json(self) -> dict:
        return {"kept": self.kept, "speedup": self.speedup, "reason": self.reason}


def guard_decision(cleaned, rewritten, options: OptimizeOptions, trace: dict | None):
    """Time ``rewritten`` against ``cleaned`` (paths or ModelProtos: the pipeline with and
    without the rule search) when the guard applies; see :attr:`OptimizeOptions.guard`."""
    if not options.guard:
        return GuardDecision(REWRITTEN, None, "guard off")
    if trace is None or not trace["steps"]:
        return GuardDecision(REWRITTEN, None, "the search rewrote nothing")
    try:
        speedup = measure_speedup(cleaned, rewritten, options)
    except GraphoptError as exc:
        # Typically onnxruntime refusing the rewritten model at ORT_ENABLE_ALL (the numeric
        # check runs with its optimizations off): users would hit the same error.
        return GuardDecision(CLEANED, None, f"could not time the rewritten model: {exc}")
    if speedup >= GUARD_MIN_SPEEDUP:
        return GuardDecision(REWRITTEN, speedup, "measured faster than the clean-up alone")
    return GuardDecision(
        CLEANED, speedup,
        f"the rewrites measured {speedup:.3f}x (< {GUARD_MIN_SPEEDUP}): kept the "
        "clean-up passes' result",
    )  # fmt: skip


def measure_speedup(cleaned, rewritten, options: OptimizeOptions) -> float:
    """The guard's measurement: ``rewritten``'s end-to-end speedup over ``cleaned`` on
    onnxruntime (median of per-round ratios, :func:`optimizer.cost.rerank.rerank`)."""
    from optimizer.cost.rerank import rerank

    (ranked,) = rerank(
        [rewritten], cleaned, device=options.device, rounds=GUARD_ROUNDS,
        input_shapes=options.input_shapes, seed=options.seed,
    )  # fmt: skip
    return ranked.speedup


#: Cost models ``cost_model`` accepts.
COST_MODELS: tuple[str, ...] = ("analytic", "measured")


def cost_model(options: OptimizeOptions):
    """The cost model ``options`` name, with onnxruntime's fusions priced in."""
    from optimizer.cost import AnalyticCost
    from optimizer.cost.fusion import OrtFusionCost

    if options.cost_model == "measured":
        from optimizer.cost.measured import MeasuredCost

        return OrtFusionCost(MeasuredCost(device=options.device))
    # The NCHWc layout correction describes onnxruntime's CPU kernels only.
    return OrtFusionCost(AnalyticCost(), cpu_layout=runs_on_cpu(options))


def runs_on_cpu(options: OptimizeOptions) -> bool:
    """Whether ``options`` target onnxruntime's CPU provider ("auto" without a GPU)."""
    return options.device == "cpu" or (
        options.device == "auto" and "cuda" not in runtime.available_devices()
    )


def search_trace(passes: Sequence[PassResult]) -> dict | None:
    """The search trace of a run's apply-rules passes, merged (None when none ran)."""
    traces = [p.trace for p in passes if p.trace is not None]
    if not traces:
        return None
    merged = dict(traces[0])
    merged["steps"] = [s for t in traces for s in t["steps"]]
    merged["cost_after"] = traces[-1]["cost_after"]
    merged["seconds"] = sum(t["seconds"] for t in traces)
    merged["explored"] = sum(t["explored"] for t in traces)
    merged["stopped_by"] = traces[-1]["stopped_by"]
    return merged


#: metadata_props key of the optimization summary written into every optimized model.
SUMMARY_KEY = "graphopt.optimization"


def with_summary(graph: Graph, passes: Sequence[PassResult], options: OptimizeOptions) -> Graph:
    """``graph`` with a short JSON summary of the run in its metadata (replacing an earlier
    run's): search, cost model, cost before/after, rewrites applied per rule."""
    import json
    from collections import Counter
    from importlib.metadata import PackageNotFoundError, version

    trace = search_trace(passes)
    try:
        ours = version("graphopt")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout
        ours = "unknown"
    summary = {
        "graphopt": ours,
        "passes": [p.name for p in passes],
        "cost_model": options.cost_model,
    }
    if trace is not None:
        summary.update(
            search=trace["algorithm"], cost_before=trace["cost_before"],
            cost_after=trace["cost_after"], search_seconds=round(trace["seconds"], 3),
            rewrites=dict(Counter(s["rule"] for s in trace["steps"])),
        )  # fmt: skip
    props = tuple(kv for kv in graph.meta.metadata_props if kv[0] != SUMMARY_KEY)
    props += ((SUMMARY_KEY, json.dumps(summary, sort_keys=True)),)
    return replace(graph, meta=replace(graph.meta, metadata_props=props))


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
    guard: GuardDecision | None = None
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """A JSON-ready dict (the CLI's ``--json`` output)."""
        return {
            "before": self.before.to_json(),
            "after": self.after.to_json(),
            "passes": [
                {k: v for k, v in vars(p).items() if k != "trace"} for p in self.passes
            ],
            "seconds": round(self.seconds, 4),
            "checked": self.checked,
            "max_abs_error": self.max_abs_error,
            "size_before": self.size_before,
            "size_after": self.size_after,
            "output": self.output_path,
            "search": search_trace(self.passes),
            "guard": self.guard.to_json() if self.guard is not None else None,
        }


def stored_stats(proto: onnx.ModelProto, graph: Graph) -> ModelStats:
    """Statistics of a model file as stored: nodes, op histogram and parameters count what
    the file holds (before the importer merges duplicates and drops dead nodes); FLOPs,
    types and opsets come from ``graph``, its import."""
    histogram, params = onnx_io.proto_summary(proto)
    return replace(
        graph_stats(graph), nodes=sum(histogram.values()), op_histogram=histogram, parameters=params
    )


@dataclass
class _Optimized:
    """The pipeline's two results: ``cleaned`` by the clean-up passes alone, ``rewritten`` by
    the whole pipeline (the rule search on top of the clean-up); ``passes`` of both runs."""

    cleaned: Graph
    rewritten: Graph
    passes: list[PassResult]

    @property
    def trace(self) -> dict | None:
        return search_trace(self.passes)


def _optimize_graph(graph: Graph, options: OptimizeOptions) -> _Optimized:
    cleanup = [p for p in options.passes if p != "apply-rules"]
    cleaned, passes = run_passes(graph, cleanup, fold_size_limit=options.fold_size_limit)
    if len(cleanup) == len(options.passes):
        cleaned = with_summary(cleaned, passes, options)
        return _Optimized(cleaned, cleaned, passes)
    settings = SearchSettings(
        algorithm=options.search, time_limit=options.time_limit, cost=cost_model(options),
        seed=options.seed,
    )  # fmt: skip
    rewritten, more = run_passes(
        cleaned, options.passes, fold_size_limit=options.fold_size_limit, search=settings
    )
    if runs_on_cpu(options):
        rewritten, lowering = _lower(rewritten)
        more += lowering
    passes += more
    return _Optimized(
        with_summary(cleaned, passes[: len(passes) - len(more)], options),
        with_summary(rewritten, passes, options),
        passes,
    )


def _lower(graph: Graph) -> tuple[Graph, list[PassResult]]:
    """The lowering pass for onnxruntime's CPU provider (:mod:`optimizer.passes.lowering`),
    and its PassResult when it changed something."""
    from optimizer.passes.lowering import lower_for_runtime

    start = time.perf_counter()
    count = len(graph.nodes())
    lowered, applied = lower_for_runtime(graph, "cpu")
    if not applied:
        return graph, []
    lowered.check()
    seconds = time.perf_counter() - start
    return lowered, [PassResult("lower-for-runtime", count, len(lowered.nodes()), seconds, None)]


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
    run = _optimize_graph(graph, options)
    result = onnx_io.to_proto(run.rewritten)
    if options.guard and run.rewritten.key != run.cleaned.key:
        cleaned = onnx_io.to_proto(run.cleaned)
        if guard_decision(cleaned, result, options, run.trace).kept == CLEANED:
            result = cleaned
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
    on_graphs: Callable[[Graph, Graph, Graph], Any] | None = None,
    **kwargs,
) -> OptimizeReport:
    """Optimize the model file ``src`` into ``dst`` (default: ``<src>.opt.onnx``).

    Weights stream from ``src`` to ``dst`` without being held in memory. The
    result is written to a temporary folder beside ``dst``, checked against
    ``src`` there, and only then moved into place; on any failure nothing
    at ``dst`` changes. ``dst`` may equal ``src`` only with ``in_place=True``.

    ``on_graphs(original, cleaned, rewritten)``, when given, sees the imported model, the
    clean-up passes' result and the rule search's result before anything is written (the
    original's weights still readable); what it returns is the report's ``extra["on_graphs"]``.
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
    run = _optimize_graph(graph, options)
    seen = {} if on_graphs is None else {"on_graphs": on_graphs(graph, run.cleaned, run.rewritten)}
    del graph
    passes = [structural, *run.passes]
    staging = Path(tempfile.mkdtemp(prefix=".graphopt-", dir=dst_path.parent.resolve()))
    try:
        staged = staging / dst_path.name
        final = run.rewritten
        onnx_io.save(final, staged, external_data=external_data)
        decision = GuardDecision(REWRITTEN, None, "the search rewrote nothing")
        if not options.guard:
            decision = GuardDecision(REWRITTEN, None, "guard off")
        elif run.rewritten.key != run.cleaned.key:
            baseline = staging / "cleaned" / dst_path.name
            baseline.parent.mkdir()
            onnx_io.save(run.cleaned, baseline, external_data=external_data)
            decision = guard_decision(baseline, staged, options, run.trace)
            if decision.kept == CLEANED:
                final = run.cleaned
                for old in staging.iterdir():
                    if old.is_file():
                        old.unlink()
                for new in baseline.parent.iterdir():
                    os.replace(new, staging / new.name)
            shutil.rmtree(baseline.parent, ignore_errors=True)
        after = graph_stats(final)
        del run, final  # release lazily mapped weights of src before it may be replaced
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
        guard=decision,
        extra=seen,
    )
