"""The "torch-graphopt" row of ``graphopt bench --torch``: a model compiled with this backend.

:func:`graphopt_variant` compiles a module with ``torch.compile(backend=graphopt)`` the way
the benchmark runner compiles inductor: compile time is the first compiled call, and the
returned callable runs one inference under ``torch.inference_mode`` (synchronizing CUDA).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from optimizer.torch_backend import graphopt_backend
from optimizer.torch_backend.options import parse_options


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
    given = dict(options or {})
    if threads is not None:
        given.setdefault("threads", threads)
    opts = parse_options(given)
    module = module.to(device).eval()
    inputs = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    compiled = torch.compile(module, backend=functools.partial(graphopt_backend, options=opts))

    def run() -> object:
        with torch.inference_mode():
            out = compiled(*inputs)
        sync()
        return out

    start = time.perf_counter()
    run()
    return run, time.perf_counter() - start


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
) -> list[dict[str, Any]]:
    """Eager, inductor and graphopt latency and compile time per zoo model, the three
    timed interleaved in one process (optimizer.timing.interleaved; eager is the reference,
    so ``speedup`` is over eager). One dict per model."""
    from benchmarks import models
    from optimizer.timing import interleaved

    torch.set_num_threads(threads)
    results = []
    for name in names:
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
        results.append(row)
        say(_row_line(row))
        torch._dynamo.reset()
    return results


def _row_line(row: dict[str, Any]) -> str:
    parts = [row["model"]]
    for label in ("eager", "inductor", "graphopt"):
        r = row[label]
        parts.append(f"{label} {r['latency_ms']:.1f} ms (compile {r['compile_seconds']:.1f} s)")
    ratio = row["inductor"]["latency_ms"] / row["graphopt"]["latency_ms"]
    parts.append(f"graphopt/inductor speedup {ratio:.2f}x")
    return " | ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m optimizer.torch_backend.bench [--models a,b] [--threads N] [--rounds N]
    [--device cpu|cuda] [--out results.json]``: the eager / inductor / graphopt comparison."""
    import argparse
    import json

    from optimizer.bench.machine import describe_machine

    parser = argparse.ArgumentParser(prog="python -m optimizer.torch_backend.bench")
    parser.add_argument("--models", default="resnet50,bert_base,gpt2_small")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", default=None, help="write the results (JSON) here")
    args = parser.parse_args(argv)
    rows = measure(
        [m for m in args.models.split(",") if m],
        device=args.device, threads=args.threads, rounds=args.rounds,
    )  # fmt: skip
    if args.out:
        doc = {"machine": describe_machine(), "results": rows}
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
