"""Run a benchmark suite: export, optimize, compare and time every model of the suite.

For each model (see :func:`bench_model`):

1. the zoo's ONNX export (``benchmarks.models.export``, cached);
2. graphopt's optimization through :func:`optimizer.api.optimize_file` (with its numeric check),
   and, with ``peers``, each peer optimizer in its own subprocess (:mod:`optimizer.bench.peers`);
3. every produced model's outputs compared with the original's on the benchmark inputs, with
   graphopt's own tolerances for every system;
4. latency: the original and every produced model on onnxruntime at ORT_ENABLE_ALL, interleaved
   in this process with fixed intra-op threads and spinning off (:mod:`optimizer.timing`);
   speedups are medians of per-round ratios against the original;
5. with ``torch``: torch eager, torch.compile with inductor and with graphopt's backend,
   timed the same way against the original on onnxruntime, and the compile times.

One model's failure is recorded in its entry and the suite goes on. The JSON document is
rewritten after every model, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from optimizer import api, onnx_io, runtime, timing
from optimizer.bench import machine, peers
from optimizer.errors import CheckFailedError, GraphoptError

#: Version tag of the JSON document; bump when its shape changes.
SCHEMA = "graphopt-bench/1"

#: Name of the reference system (the unmodified model on onnxruntime at ORT_ENABLE_ALL).
ORIGINAL = "original"
GRAPHOPT = "graphopt"
#: A second session of the unmodified model, timed like every system: its "speedup" is the
#: protocol's own bias and noise floor (an A/A test), reported beside the real speedups.
CONTROL = "control"

#: Status callback: (model name, step description).
StatusFn = Callable[[str, str], None]


@dataclass(frozen=True)
class BenchConfig:
    """Everything a benchmark run depends on (all recorded in the JSON document).

    - ``suite``/``models``: the suite, optionally narrowed to some of its models (or any
      registered model names);
    - ``device``: where the timed sessions run ("cpu" or "cuda");
    - ``search``/``time_limit``: graphopt's search algorithm and the seconds it may take;
    - ``peers``/``torch``: also run the peer optimizers / torch eager and inductor;
    - ``fresh_compiles``: with ``torch``, also time inductor's and graphopt's compile cold
      (empty caches) and warm (caches filled by the cold run), each in a fresh process;
    - ``batch``: batch size of the exported models;
    - ``threads``: onnxruntime intra-op threads (and torch's); default: the usable CPUs;
    - ``rounds``/``sample_seconds``: the timing protocol (see :mod:`optimizer.timing`);
    - ``peer_timeout``: seconds a peer may take before it is stopped;
    - ``keep_models``: keep the optimized models under ``out/models``.
    """

    suite: str = "quick"
    models: tuple[str, ...] | None = None
    device: str = "cpu"
    search: str = "auto"
    time_limit: float = 10.0
    peers: bool = False
    torch: bool = False
    fresh_compiles: bool = False
    out: Path = Path("bench-results")
    batch: int = 1
    threads: int | None = None
    rounds: int = timing.DEFAULT_ROUNDS
    sample_seconds: float = timing.DEFAULT_SAMPLE_SECONDS
    peer_timeout: float = 900.0
    keep_models: bool = False
    seed: int = 0

    @property
    def effective_threads(self) -> int:
        return self.threads or machine.usable_cpus()


def _zoo():
    """The model zoo (``benchmarks.models``); it ships with graphopt."""
    from benchmarks import models

    return models


def selected_models(config: BenchConfig) -> list[str]:
    """The models ``config`` names, in suite order; unknown names raise :class:`GraphoptError`."""
    zoo = _zoo()
    if config.suite not in zoo.SUITES:
        raise GraphoptError(f"unknown suite {config.suite!r}; suites: {', '.join(zoo.SUITES)}")
    if not config.models:
        return list(zoo.SUITES[config.suite])
    unknown = [m for m in config.models if m not in zoo.MODELS]
    if unknown:
        raise GraphoptError(
            f"unknown model {unknown[0]!r}; models of suite {config.suite}: "
            + ", ".join(zoo.SUITES[config.suite])
        )
    return list(dict.fromkeys(config.models))


def _require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise GraphoptError(
            "graphopt bench builds its models in torch: pip install 'graphopt[torch]'"
        ) from exc


def benchmark_inputs(spec, batch: int, session, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for ``session`` from the zoo's input description (token ids in range, attention
    masks all ones), matched to the session's inputs by name, else by position."""
    rng = np.random.default_rng(seed)
    values = []
    for t in spec.inputs:
        shape = t.concrete_shape(batch)
        if t.dtype == "int64":
            if t.fill is not None:
                values.append(np.full(shape, t.fill, dtype=np.int64))
            else:
                values.append(rng.integers(t.low, t.high, size=shape, dtype=np.int64))
        else:
            values.append(rng.standard_normal(shape, dtype=np.float32))
    names = [i.name for i in session.get_inputs()]
    by_name = {t.name: v for t, v in zip(spec.inputs, values)}
    if set(names) <= set(by_name):
        return {n: by_name[n] for n in names}
    if len(names) != len(values):
        raise GraphoptError(
            f"{spec.name}: the export has inputs {names}, the zoo describes {list(by_name)}"
        )
    return dict(zip(names, values))


@dataclass
class SystemResult:
    """One system's result on one model (a JSON object in ``systems``)."""

    status: str = "ok"  # ok | check-failed | failed | crashed | timeout | unavailable | skipped
    error: str | None = None
    optimize_seconds: float | None = None
    nodes: int | None = None
    cost: float | None = None
    outputs_match: bool | None = None
    max_abs_error: float | None = None
    latency_ms: float | None = None
    speedup: float | None = None
    speedup_q1: float | None = None
    speedup_q3: float | None = None
    compile_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        extra = data.pop("extra")
        data.update(extra)
        return {k: _json_number(v) for k, v in data.items()}


def _json_number(value: Any) -> Any:
    if isinstance(value, float):
        return None if not math.isfinite(value) else round(value, 6)
    return value


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _stored_nodes(path: Path) -> int:
    histogram, _ = onnx_io.proto_summary(onnx_io.load_proto(path))
    return sum(histogram.values())


def _analytic_cost(path: Path) -> float | None:
    """The estimate of the cost model graphopt's search minimises by default (the analytic one,
    onnxruntime's fusions priced in) for the model at ``path``; None if it cannot import: peers
    may emit ops graphopt does not know."""
    try:
        graph, _ = onnx_io.import_model(onnx_io.load_proto(path), onnx_io.base_dir_of(path))
        return api.cost_model(api.OptimizeOptions())(graph)
    except Exception:  # noqa: BLE001 - the estimate is informative only
        return None


def _compare(path: Path, candidate: Path, feeds: list[dict], config: BenchConfig, result):
    report = runtime.compare_models(
        path,
        candidate,
        inputs=feeds,
        rtol=api.DEFAULT_RTOL,
        atol=api.DEFAULT_ATOL,
        device=config.device,
    )
    result.outputs_match = report.ok
    errors = [o.max_abs_err for o in report.outputs if math.isfinite(o.max_abs_err)]
    result.max_abs_error = max(errors) if errors else None
    if not report.ok:
        result.error = report.summary().splitlines()[0]


def _run_graphopt(path: Path, dst: Path, config: BenchConfig) -> SystemResult:
    result = SystemResult()
    options = api.OptimizeOptions(
        device=config.device, search=config.search, time_limit=config.time_limit
    )
    try:
        report = api.optimize_file(path, dst, options)
    except CheckFailedError as exc:
        return SystemResult(status="check-failed", error=_one_line(exc))
    except GraphoptError as exc:
        return SystemResult(status="failed", error=_one_line(exc))
    result.optimize_seconds = sum(p.seconds for p in report.passes)
    result.extra["total_seconds"] = report.seconds
    result.extra["passes"] = [
        {"name": p.name, "nodes_before": p.nodes_before, "nodes_after": p.nodes_after,
         "seconds": round(p.seconds, 4)}
        for p in report.passes
    ]  # fmt: skip
    return result


def _time_sessions(
    models: Mapping[str, Path], feed: dict, config: BenchConfig, on_round=None
) -> dict[str, timing.VariantTiming]:
    options = runtime.SessionOptionsSpec(
        opt_level="all", intra_op_threads=config.effective_threads, allow_spinning=False
    )
    variants = []
    for name, path in models.items():
        session = runtime.make_session(path, device=config.device, options=options, label=name)
        names = {i.name for i in session.get_inputs()}
        own_feed = {k: v for k, v in feed.items() if k in names}
        variants.append((name, lambda s=session, f=own_feed: s.run(None, f)))
    return timing.interleaved(
        variants,
        reference=ORIGINAL,
        rounds=config.rounds,
        sample_seconds=config.sample_seconds,
        on_round=on_round,
    )


def _torch_variants(name: str, config: BenchConfig, systems: dict[str, SystemResult]):
    """Callables for torch eager and torch.compile (inductor), with the compile time measured
    as the first compiled call."""
    import torch

    torch.set_num_threads(config.effective_threads)
    module, inputs = _zoo().build(name, config.batch)
    device = "cuda" if config.device == "cuda" else "cpu"
    module = module.to(device)
    inputs = tuple(x.to(device) for x in inputs)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def call(fn):
        def run():
            with torch.inference_mode():
                fn(*inputs)
            sync()

        return run

    variants = [("torch-eager", call(module))]
    systems["torch-eager"] = SystemResult()
    try:
        compiled = torch.compile(module, backend="inductor")
        start = time.perf_counter()
        call(compiled)()
        systems["torch-inductor"] = SystemResult(compile_seconds=time.perf_counter() - start)
        variants.append(("torch-inductor", call(compiled)))
    except Exception as exc:  # noqa: BLE001 - a failing compiler is a result, not a crash
        systems["torch-inductor"] = SystemResult(status="failed", error=_one_line(exc))
    try:
        from optimizer.torch_backend.bench import graphopt_variant

        run, seconds = graphopt_variant(
            module, inputs, device=device, threads=config.effective_threads
        )
        systems["torch-graphopt"] = SystemResult(compile_seconds=seconds)
        variants.append(("torch-graphopt", run))
    except Exception as exc:  # noqa: BLE001 - as for inductor
        systems["torch-graphopt"] = SystemResult(status="failed", error=_one_line(exc))
    if config.fresh_compiles:
        _fresh_compile_times(name, config, device, systems)
    return variants


def _fresh_compile_times(name, config, device, systems: dict[str, SystemResult]) -> None:
    """Cold and warm compile seconds of inductor and graphopt, each in a fresh process over
    caches of its own (:func:`optimizer.torch_backend.bench.fresh_process_compile_times`), into
    the systems' ``compile_cold_seconds`` / ``compile_warm_seconds`` (graphopt's phases too)."""
    from optimizer.torch_backend.bench import fresh_process_compile_times

    times = fresh_process_compile_times(
        name, device=device, threads=config.effective_threads, say=lambda _line: None
    )
    for compiler, runs in times.items():
        result = systems.get(f"torch-{compiler}")
        if result is None:
            continue
        for run, found in runs.items():
            if "compile_seconds" in found:
                result.extra[f"compile_{run}_seconds"] = found["compile_seconds"]
                if "phases" in found:
                    result.extra[f"compile_{run}_phases"] = found["phases"]
            else:
                result.extra[f"compile_{run}_error"] = found.get("error", "no result")


def bench_model(
    name: str, config: BenchConfig, workdir: Path, status: StatusFn | None = None
) -> dict[str, Any]:
    """Benchmark one model; returns its JSON entry (see the module docstring)."""
    zoo = _zoo()
    spec = zoo.get(name)
    say = (lambda step: status(name, step)) if status else (lambda step: None)
    entry: dict[str, Any] = {"name": name, "description": spec.description, "status": "ok"}
    say("export")
    start = time.perf_counter()
    path = zoo.export(name, config.batch)
    sidecar = zoo.read_sidecar(path)
    entry["export"] = {
        "exporter": sidecar.get("exporter"),
        "seconds": round(time.perf_counter() - start, 3),
        "parameters": sidecar.get("parameters"),
        "file": str(path),
    }
    original = SystemResult(nodes=_stored_nodes(path), cost=_analytic_cost(path))
    systems: dict[str, SystemResult] = {ORIGINAL: original}
    produced: dict[str, Path] = {ORIGINAL: path}

    say("graphopt optimize")
    dst = workdir / f"{name}.{GRAPHOPT}.onnx"
    systems[GRAPHOPT] = _run_graphopt(path, dst, config)
    if systems[GRAPHOPT].status == "ok":
        produced[GRAPHOPT] = dst
    if config.peers:
        for peer_name, peer in peers.PEERS.items():
            if not peer.applies_to(spec.transformer):
                systems[peer_name] = SystemResult(
                    status="skipped",
                    error="applies to transformer models with an onnxruntime.transformers "
                    "model type (bert, gpt2, t5, vit ...) only",
                )
                continue
            say(f"{peer_name} optimize")
            out = workdir / f"{name}.{peer_name}.onnx"
            transformer = dict(spec.transformer) if spec.transformer else None
            outcome = peers.run_peer(
                peer_name, path, out, transformer=transformer, timeout=config.peer_timeout
            )
            systems[peer_name] = SystemResult(
                status=outcome.status, error=outcome.error, optimize_seconds=outcome.seconds
            )
            if outcome.status == "ok":
                produced[peer_name] = out

    probe = runtime.make_session(path, device=config.device, options=runtime.CHECK_OPTIONS)
    feeds = [benchmark_inputs(spec, config.batch, probe, seed=config.seed + k) for k in range(2)]
    del probe
    for system, candidate in produced.items():
        if system == ORIGINAL:
            continue
        say(f"compare {system}")
        result = systems[system]
        result.nodes = _stored_nodes(candidate)
        result.cost = _analytic_cost(candidate)
        try:
            _compare(path, candidate, feeds, config, result)
        except GraphoptError as exc:
            result.outputs_match, result.error = False, _one_line(exc)

    say("timing")
    systems[CONTROL] = SystemResult(nodes=original.nodes, cost=original.cost, outputs_match=True)
    timings = _time_sessions({**produced, CONTROL: path}, feeds[0], config)
    if config.torch:
        say("torch eager / inductor")
        variants = _torch_variants(name, config, systems)
        original_session = runtime.make_session(
            path,
            device=config.device,
            options=runtime.SessionOptionsSpec(
                opt_level="all", intra_op_threads=config.effective_threads, allow_spinning=False
            ),
        )
        feed = feeds[0]
        variants.insert(0, (ORIGINAL, lambda: original_session.run(None, feed)))
        torch_timings = timing.interleaved(
            variants,
            reference=ORIGINAL,
            rounds=max(3, config.rounds // 2),
            sample_seconds=config.sample_seconds,
        )
        timings.update({k: v for k, v in torch_timings.items() if k != ORIGINAL})
        entry["torch_reference_ms"] = round(torch_timings[ORIGINAL].latency_ms, 4)
    for system, t in timings.items():
        result = systems[system]
        result.latency_ms, result.speedup = t.latency_ms, t.speedup
        result.speedup_q1, result.speedup_q3 = t.speedup_q1, t.speedup_q3
        result.extra["calls_per_sample"] = t.calls
    entry["systems"] = {k: v.to_json() for k, v in systems.items()}
    return entry


def summarize(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Per system: geometric-mean speedup over the models where it produced a model whose
    outputs matched, and how many models that was."""
    systems: dict[str, list[float]] = {}
    attempted: dict[str, int] = {}
    for entry in entries:
        for system, result in entry.get("systems", {}).items():
            if system in (ORIGINAL, CONTROL) or result.get("status") == "skipped":
                continue
            attempted[system] = attempted.get(system, 0) + 1
            matched = result.get("outputs_match") is not False
            if result.get("status") == "ok" and matched and result.get("speedup"):
                systems.setdefault(system, []).append(result["speedup"])
    graphopt_all_match = all(
        e.get("systems", {}).get(GRAPHOPT, {}).get("outputs_match") is True for e in entries
    )
    controls = [
        e["systems"][CONTROL]["speedup"] for e in entries
        if e.get("systems", {}).get(CONTROL, {}).get("speedup")
    ]  # fmt: skip
    return {
        "control_geomean": _json_number(timing.geometric_mean(controls)),
        "geomean_speedup": {s: _json_number(timing.geometric_mean(v)) for s, v in systems.items()},
        "models_counted": {s: len(v) for s, v in systems.items()},
        "models_attempted": attempted,
        "graphopt_outputs_match": graphopt_all_match and bool(entries),
        "models_failed": [e["name"] for e in entries if e.get("status") != "ok"],
    }


def _write_json(document: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(tmp, path)


def run_bench(
    config: BenchConfig,
    *,
    status: StatusFn | None = None,
    on_model_done: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark ``config`` describes; writes ``results.json`` into ``config.out`` after
    every model and returns the final document."""
    names = selected_models(config)
    _require_torch()
    if config.device == "cuda":
        runtime.providers_for("cuda")  # fail early, with the reason, when CUDA is missing
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "suite": config.suite,
        "config": {
            "models": names, "device": config.device, "search": config.search,
            "time_limit": config.time_limit,
            "peers": config.peers, "torch": config.torch, "batch": config.batch,
            "threads": config.effective_threads, "rounds": config.rounds,
            "sample_seconds": config.sample_seconds, "seed": config.seed,
            "ort_opt_level": "all", "allow_spinning": False,
        },
        "machine": machine.describe_machine(
            tuple(pkg for p in peers.PEERS.values() for pkg in p.packages)
        ),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "models": [],
    }  # fmt: skip
    json_path = out / "results.json"
    start = time.perf_counter()
    models_dir = out / "models"
    if config.keep_models:
        models_dir.mkdir(exist_ok=True)
    for name in names:
        workdir = models_dir if config.keep_models else Path(tempfile.mkdtemp(prefix="bench-"))
        try:
            entry = bench_model(name, config, workdir, status)
        except Exception as exc:  # noqa: BLE001 - one model's failure must not end the suite
            entry = {
                "name": name, "status": "error", "error": _one_line(exc),
                "traceback": traceback.format_exc(limit=8),
            }  # fmt: skip
        finally:
            if not config.keep_models:
                shutil.rmtree(workdir, ignore_errors=True)
        document["models"].append(entry)
        document["seconds"] = round(time.perf_counter() - start, 1)
        document["summary"] = summarize(document["models"])
        _write_json(document, json_path)
        if on_model_done is not None:
            on_model_done(entry)
    return document
