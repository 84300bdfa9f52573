"""Run every labelling benchmark and gather their Markdown snippets into
``benchmarks/label/results/RESULTS_label.md`` (the section the lead merges into
benchmarks/RESULTS.md).

    python -m benchmarks.label.run_all            # all four (about 20 minutes on 2 cores)
    python -m benchmarks.label.run_all --only crowd label_errors
    python -m benchmarks.label.run_all --collect  # only re-gather the existing snippets
"""

from __future__ import annotations

import argparse
import importlib

from benchmarks.label._results import RESULTS, machine

#: Benchmark name (its results file) -> module.
BENCHMARKS = {
    "label_errors": "benchmarks.label.bench_label_errors",
    "crowd": "benchmarks.label.bench_crowd",
    "active_learning": "benchmarks.label.bench_active",
    "throughput": "benchmarks.label.bench_throughput",
}


def collect() -> str:
    """Join the snippets that exist, with the machine they ran on."""
    m = machine()
    parts = [
        "## Labelling (optimizer.label)\n",
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, numpy {m['numpy']}, "
        f"onnxruntime {m['onnxruntime']}. Regenerate everything with "
        "`python -m benchmarks.label.run_all`.\n",
    ]
    for name in BENCHMARKS:
        path = RESULTS / f"{name}.md"
        if path.exists():
            parts.append(path.read_text().strip() + "\n")
    text = "\n".join(parts)
    (RESULTS / "RESULTS_label.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=list(BENCHMARKS), default=None)
    parser.add_argument("--collect", action="store_true", help="only gather the snippets")
    args = parser.parse_args(argv)
    if not args.collect:
        for name in args.only or list(BENCHMARKS):
            print(f"== {name}", flush=True)
            importlib.import_module(BENCHMARKS[name]).main([])
    print(collect())


if __name__ == "__main__":
    main()
