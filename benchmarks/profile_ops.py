"""Where the time goes: ``python -m benchmarks.profile_ops [--suite taso]``.

Runs each model of the suite on onnxruntime at ORT_ENABLE_ALL (after onnxruntime's own
fusions, so the op types are the kernels that really run) with onnxruntime's profiler on, and
sums kernel time per op type. Writes ``benchmarks/results/profile/results.{json,md}``: per
model, the share of the run spent in each op type, and how many kernels run. This is what
bounds what a graph rewrite can still gain over onnxruntime: time inside large GEMM and
convolution kernels is the kernels' business, not the graph's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

import onnxruntime as ort

from optimizer.bench.machine import describe_machine, machine_line
from optimizer.bench.runner import benchmark_inputs

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "profile"


def profile(name: str, runs: int, threads: int) -> dict:
    """Kernel time per op type for model ``name`` (microseconds summed over ``runs`` runs)."""
    from benchmarks import models

    path = models.export(name)
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "profile")
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = benchmark_inputs(models.get(name), 1, session)
        for _ in range(3):  # warm-up runs are profiled too; dropped below by run count
            session.run(None, feed)
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    per_op: Counter[str] = Counter()
    kernels: Counter[str] = Counter()
    total = 0.0
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        op = event.get("args", {}).get("op_name", "?")
        per_op[op] += event.get("dur", 0)
        kernels[op] += 1
        total += event.get("dur", 0)
    calls = runs + 3
    return {
        "name": name,
        "kernels_per_run": sum(kernels.values()) // calls,
        "ms_per_run": total / calls / 1000,
        "ops": {
            op: {"share": dur / total if total else 0.0, "kernels": kernels[op] // calls}
            for op, dur in per_op.most_common()
        },
    }


def markdown(document: dict, top: int = 6) -> str:
    lines = [
        "## Where the time goes (onnxruntime's profiler, ORT_ENABLE_ALL)",
        "",
        f"- machine: {machine_line(document['machine'])}, {document['threads']} threads; "
        f"`python -m benchmarks.profile_ops --suite {document['suite']}`",
        "- per model: kernels per run, and the op types taking most of the kernel time "
        "(share of the time, kernels of that type per run)",
        "",
        "| model | kernels/run | ms/run (kernels) | top op types |",
        "|---|---|---|---|",
    ]
    for entry in document["models"]:
        tops = ", ".join(
            f"{op} {100 * v['share']:.0f}% ({v['kernels']})"
            for op, v in list(entry["ops"].items())[:top]
        )
        lines.append(
            f"| {entry['name']} | {entry['kernels_per_run']} | {entry['ms_per_run']:.1f} "
            f"| {tops} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="taso")
    parser.add_argument("--models")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    from benchmarks import models

    names = args.models.split(",") if args.models else models.SUITES[args.suite]
    document = {
        "machine": describe_machine(), "suite": args.suite, "threads": args.threads,
        "models": [profile(n, args.runs, args.threads) for n in names],
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    (args.out / "results.md").write_text(markdown(document))
    print(markdown(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
