"""The "torch-graphopt" row of ``graphopt bench --torch``: a model compiled with this backend.

:func:`graphopt_variant` compiles a module with ``torch.compile(backend=graphopt)`` the way
the benchmark runner compiles inductor: compile time is the first compiled call, and the
returned callable runs one inference under ``torch.inference_mode`` (synchronizing CUDA).

Compile time depends on what the caches hold (inductor's FX graph and code caches, graphopt's
compile cache), so :func:`fresh_process_compile_times` measures it like for like: each system
compiles the model in a fresh process, first with empty caches of its own (*cold*: a new
``TORCHINDUCTOR_CACHE_DIR`` and ``GRAPHOPT_TORCH_CACHE_DIR``), then again in a second fresh
process over the caches the first one filled (*warm*). :func:`measure` reports both beside
the in-process figure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from optimizer.torch_backend import graphopt_backend
from optimizer.torch_backend.compiled import CompiledGraph
from optimizer.torch_backend.options import parse_options

#: Systems whose compile time :func:`fresh_process_compile_times` measures.
COMPILERS = ("inductor", "graphopt")
#: The environment variable naming each system's cache folder.
_CACHE_ENV = {"inductor": "TORCHINDUCTOR_CACHE_DIR", "graphopt": "GRAPHOPT_TORCH_CACHE_DIR"}
#: The line a compile-only child process prints its result on.
_RESULT_TAG = "GRAPHOPT_COMPILE_RESULT "
#: Phases of a graphopt compilation (CompileStats fields), summed over the graphs.
_PHASES = ("lookup", "export", "save", "optimize", "verify", "session", "store", "check")


def graphopt_variant(
    module: torch.nn.Module,
    inputs: Sequence[Any],
    *,
    device: str = "cpu",
    threads: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> tuple[Callable[[], object], float]:
    """``(run_one_inference, compile_seconds)`` for ``module`` compiled by graphopt.

    ``module`` and ``inputs`` move to ``device`` ("cpu" or "cuda"); ``threads`` sets
    onnxruntime's intra-op threads (default: ``torch.get_num_threads()``); ``options`` are
    backend options (docs/torch.md). The first call (dynamo tracing, export, optimization,
    verification, session creation) is timed as the compile time; a graph that fails to
    compile runs eagerly (the backend warns), so the row still measures what a user gets.
    """
    run, seconds, _ = _graphopt_compiled(
        module, inputs, device=device, threads=threads, options=options
    )
    return run, seconds


def _graphopt_compiled(module, inputs, *, device, threads, options):
    """:func:`graphopt_variant`, plus the CompiledGraph objects (their CompileStats)."""
    given = dict(options or {})
    if threads is not None:
        given.setdefault("threads", threads)
    opts = parse_options(given)
    module = module.to(device).eval()
    inputs = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    graphs: list[CompiledGraph] = []

    def backend(gm, example_inputs, **kwargs):
        result = graphopt_backend(gm, example_inputs, options=opts, **kwargs)
        if isinstance(result, CompiledGraph):
            graphs.append(result)
        graphs.extend(getattr(result, "graphopt_graphs", {}).values())
        return result

    compiled = torch.compile(module, backend=backend)

    def run() -> object:
        with torch.inference_mode():
            out = compiled(*inputs)
        sync()
        return out

    start = time.perf_counter()
    run()
    return run, time.perf_counter() - start, graphs


def compile_phases(graphs: Sequence[CompiledGraph]) -> dict[str, Any]:
    """Seconds per compile phase summed over ``graphs``, and how the compile cache served
    each graph (``hit``, ``miss``, ``off``)."""
    phases: dict[str, Any] = {
        k: round(sum(getattr(g.stats, k) for g in graphs), 3) for k in _PHASES
    }
    phases["cache"] = [g.stats.cache for g in graphs]
    phases["eager_fallbacks"] = sum(g.fallback_reason is not None for g in graphs)
    return phases


def compile_once(
    system: str,
    name: str,
    *,
    device: str = "cpu",
    threads: int = 2,
    options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build zoo model ``name`` and time its first compiled call with ``system`` (inductor or
    graphopt) in this process: ``{"compile_seconds": s}`` (graphopt adds ``phases``)."""
    from benchmarks import models

    torch.set_num_threads(threads)
    module, inputs = models.build(name)
    if system == "graphopt":
        _, seconds, graphs = _graphopt_compiled(
            module, inputs, device=device, threads=threads, options=options
        )
        return {"compile_seconds": seconds, "phases": compile_phases(graphs)}
    if system == "inductor":
        _, seconds = inductor_variant(module, inputs, device=device)
        return {"compile_seconds": seconds}
    raise ValueError(f"unknown compiler {system!r}; known: {', '.join(COMPILERS)}")


def fresh_process_compile_times(
    name: str,
    *,
    device: str = "cpu",
    threads: int = 2,
    options: Mapping[str, Any] | None = None,
    systems: Sequence[str] = COMPILERS,
    say: Callable[[str], None] = print,
    timeout: float = 1800.0,
) -> dict[str, dict[str, Any]]:
    """Cold and warm compile time of zoo model ``name`` per system, each in a fresh process
    (see the module docstring): ``{system: {"cold": {...}, "warm": {...}}}`` where each
    run is :func:`compile_once`'s result, or ``{"error": reason}``. The caches live in
    temporary folders, removed afterwards: the user's caches are neither read nor filled."""
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="graphopt-bench-caches-") as tmp:
        env = dict(os.environ)
        for system, variable in _CACHE_ENV.items():
            env[variable] = os.path.join(tmp, system)
        # inductor's warm start needs its caches on, whatever this shell says
        env["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "1"
        env["TORCHINDUCTOR_AUTOGRAD_CACHE"] = "1"
        env.pop("GRAPHOPT_TORCH_CACHE", None)
        for system in systems:
            results[system] = {}
            for run in ("cold", "warm"):
                say(f"{name}: {system} compile, {run}, in a fresh process")
                results[system][run] = _child_compile(
                    system, name, device, threads, options, env, timeout
                )
            shutil.rmtree(env[_CACHE_ENV[system]], ignore_errors=True)  # they can take GBs
    return results


def _child_compile(system, name, device, threads, options, env, timeout) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "optimizer.torch_backend.bench", "--compile-once", system,
        "--models", name, "--device", device, "--threads", str(threads),
        "--options", json.dumps(dict(options or {})),
    ]  # fmt: skip
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(_RESULT_TAG):
            return json.loads(line[len(_RESULT_TAG) :])
    tail = (done.stderr or done.stdout).strip().splitlines()
    return {"error": f"exit {done.returncode}: {tail[-1] if tail else 'no output'}"[:300]}


def eager_variant(module: torch.nn.Module, inputs: Sequence[Any], *, device: str = "cpu"):
    """``(run_one_inference, 0.0)`` for eager PyTorch, on the same terms."""
    module = module.to(device).eval()
    inputs = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run() -> object:
        with torch.inference_mode():
            out = module(*inputs)
        sync()
        return out

    return run, 0.0


def inductor_variant(module: torch.nn.Module, inputs: Sequence[Any], *, device: str = "cpu"):
    """``(run_one_inference, compile_seconds)`` for ``torch.compile`` with inductor."""
    module = module.to(device).eval()
    inputs = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    compiled = torch.compile(module, backend="inductor")

    def run() -> object:
        with torch.inference_mode():
            out = compiled(*inputs)
        sync()
        return out

    start = time.perf_counter()
    run()
    return run, time.perf_counter() - start


def measure(
    names: Sequence[str],
    *,
    device: str = "cpu",
    threads: int = 2,
    rounds: int = 10,
    options: Mapping[str, Any] | None = None,
    say: Callable[[str], None] = print,
    fresh_compiles: bool = True,
) -> list[dict[str, Any]]:
    """Eager, inductor and graphopt latency and compile time per zoo model, the three
    timed interleaved in one process (optimizer.timing.interleaved; eager is the reference,
    so ``speedup`` is over eager). One dict per model.

    ``compile_seconds`` is the first call in this process, with whatever the caches hold;
    with ``fresh_compiles``, inductor and graphopt also get ``compile_cold_seconds`` and
    ``compile_warm_seconds`` (:func:`fresh_process_compile_times`), graphopt its phases."""
    from benchmarks import models
    from optimizer.timing import interleaved

    torch.set_num_threads(threads)
    results = []
    for name in names:
        fresh = (
            fresh_process_compile_times(
                name, device=device, threads=threads, options=options, say=say
            )
            if fresh_compiles
            else {}
        )
        module, inputs = models.build(name)
        variants: dict[str, tuple] = {}
        say(f"{name}: eager")
        variants["eager"] = eager_variant(module, inputs, device=device)
        say(f"{name}: compiling with inductor")
        variants["inductor"] = inductor_variant(module, inputs, device=device)
        say(f"{name}: compiling with graphopt")
        variants["graphopt"] = graphopt_variant(
            module, inputs, device=device, threads=threads, options=options
        )
        with torch.inference_mode():
            expected = variants["eager"][0]()
            for label in ("inductor", "graphopt"):
                got = variants[label][0]()
                err = float((got - expected).abs().max()) if isinstance(got, torch.Tensor) else None
                variants[label] = (*variants[label], err)
        say(f"{name}: timing {rounds} interleaved rounds")
        timings = interleaved(
            [(label, v[0]) for label, v in variants.items()], reference="eager", rounds=rounds
        )
        row = {"model": name, "device": device, "threads": threads}
        for label, v in variants.items():
            t = timings[label]
            row[label] = {
                "latency_ms": round(t.latency_ms, 3),
                "speedup_over_eager": round(t.speedup, 3),
                "speedup_q1": round(t.speedup_q1, 3),
                "speedup_q3": round(t.speedup_q3, 3),
                "compile_seconds": round(v[1], 2),
                "max_abs_error_vs_eager": v[2] if len(v) > 2 else 0.0,
            }
            for run, runs in ((r, fresh.get(label, {}).get(r)) for r in ("cold", "warm")):
                if runs is None:
                    continue
                seconds = runs.get("compile_seconds")
                row[label][f"compile_{run}_seconds"] = round(seconds, 2) if seconds else None
                if "phases" in runs:
                    row[label][f"compile_{run}_phases"] = runs["phases"]
                if "error" in runs:
                    row[label][f"compile_{run}_error"] = runs["error"]
        results.append(row)
        say(_row_line(row))
        torch._dynamo.reset()
    return results


def _row_line(row: dict[str, Any]) -> str:
    parts = [row["model"]]
    for label in ("eager", "inductor", "graphopt"):
        r = row[label]
        compile_text = f"compile {r['compile_seconds']:.1f} s"
        if "compile_cold_seconds" in r or "compile_warm_seconds" in r:
            cold, warm = r.get("compile_cold_seconds"), r.get("compile_warm_seconds")
            compile_text += f"; cold {_seconds(cold)}, warm {_seconds(warm)}"
        parts.append(f"{label} {r['latency_ms']:.1f} ms ({compile_text})")
    ratio = row["inductor"]["latency_ms"] / row["graphopt"]["latency_ms"]
    parts.append(f"graphopt/inductor speedup {ratio:.2f}x")
    return " | ".join(parts)


def _seconds(value: float | None) -> str:
    return "failed" if value is None else f"{value:.1f} s"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m optimizer.torch_backend.bench [--models a,b] [--threads N] [--rounds N]
    [--device cpu|cuda] [--no-fresh-compiles] [--out results.json]``: the eager / inductor /
    graphopt comparison. ``--compile-once SYSTEM`` (one model) is the child process of
    :func:`fresh_process_compile_times`."""
    import argparse

    from optimizer.bench.machine import describe_machine

    parser = argparse.ArgumentParser(prog="python -m optimizer.torch_backend.bench")
    parser.add_argument("--models", default="resnet50,bert_base,gpt2_small")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", default=None, help="write the results (JSON) here")
    parser.add_argument(
        "--no-fresh-compiles", action="store_true",
        help="skip the cold and warm compile times measured in fresh processes",
    )  # fmt: skip
    parser.add_argument("--compile-once", choices=COMPILERS, help=argparse.SUPPRESS)
    parser.add_argument("--options", default="{}", help="graphopt backend options (JSON)")
    args = parser.parse_args(argv)
    options = json.loads(args.options)
    if args.compile_once:
        result = compile_once(
            args.compile_once, args.models, device=args.device, threads=args.threads,
            options=options,
        )  # fmt: skip
        print(_RESULT_TAG + json.dumps(result), flush=True)
        return 0
    rows = measure(
        [m for m in args.models.split(",") if m],
        device=args.device, threads=args.threads, rounds=args.rounds, options=options or None,
        fresh_compiles=not args.no_fresh_compiles,
    )  # fmt: skip
    if args.out:
        doc = {"machine": describe_machine(), "results": rows}
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
