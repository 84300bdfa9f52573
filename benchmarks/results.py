"""Regenerate benchmarks/RESULTS.md: ``python -m benchmarks.results``.

Runs, in this order and in one process per run (``graphopt bench`` underneath):

1. the ``taso`` suite with the peers;
2. the ``modern`` suite with the peers;
3. the torch rows (``--torch``): ResNet-50, BERT-base and GPT-2 small under torch eager and
   torch.compile (inductor), beside onnxruntime.

4. the search algorithms side by side on the ``taso`` suite (:mod:`benchmarks.search_compare`);
5. where onnxruntime spends its time on the ``taso`` suite (:mod:`benchmarks.profile_ops`).

Each run writes ``benchmarks/results/<run>/results.{json,md}`` (and ``speedup.png`` for the
suites); then RESULTS.md is assembled from them, from the cost models' ranking benchmark
(``benchmarks/results/cost_rank.md``) and from the labelling and explanation benchmarks'
Markdown snippets (``benchmarks/label/results/*.md``, ``benchmarks/explain/results/*.md``)
when those exist. ``--only taso,modern`` reruns some runs; ``--render`` only reassembles
RESULTS.md from the stored results. Use a quiet machine: the A/A control column shows how
quiet it was.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from optimizer.bench import report
from optimizer.bench.runner import BenchConfig, run_bench

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
RESULTS_MD = HERE / "RESULTS.md"

#: name -> (title, config keyword arguments)
RUNS: dict[str, tuple[str, dict]] = {
    "taso": (
        "Suite `taso` (the graphs TASO and Tensat report on)", {"suite": "taso", "peers": True}
    ),
    "modern": ("Suite `modern`", {"suite": "modern", "peers": True}),
    "torch": (
        "torch eager and torch.compile (inductor) beside onnxruntime",
        {"suite": "taso", "models": ("resnet50", "bert_base", "gpt2_small"), "torch": True,
         "fresh_compiles": True, "rounds": 10},
    ),
}  # fmt: skip

#: Runs that are scripts of their own: name -> (module, arguments).
SCRIPTS: dict[str, tuple[str, list[str]]] = {
    "search": ("benchmarks.search_compare", ["--suite", "taso"]),
    "profile": ("benchmarks.profile_ops", ["--suite", "taso"]),
}

#: Markdown files written by other benchmark scripts, included when present.
EXTRA_SECTIONS = (RESULTS_DIR / "cost_rank.md", RESULTS_DIR / "rule_audit.md")

SNIPPET_DIRS = {
    "Labelling": HERE / "label" / "results",
    "Explanation": HERE / "explain" / "results",
}

HEADER = """# Benchmark results

Regenerate with `python -m benchmarks.results` (about an hour on 2 cores; each section
names the machine and the protocol it ran with). Speedups are over the unmodified model on
onnxruntime at ORT_ENABLE_ALL, measured in one process, interleaved, as the median of
per-round ratios (ANCHORS.md); the bracket is the interquartile range of those ratios, and the
A/A control column times a second session of the unmodified model the same way, so it shows
the noise floor of the run. ✗ marks a model whose outputs differ from the original's (left out
of the geometric mean, with its largest absolute error; the tolerance is graphopt's own check's,
rtol 1e-4 and atol 1e-5, for every system). "n/a": onnxruntime.transformers' optimizer applies
only to the transformer families it knows (bert, gpt2, t5, vit ...).
"""


def run(name: str) -> dict | None:
    """Run one entry of :data:`RUNS` or :data:`SCRIPTS`, writing under benchmarks/results."""
    if name in SCRIPTS:
        import importlib

        module, args = SCRIPTS[name]
        importlib.import_module(module).main(args)
        return None
    title, kwargs = RUNS[name]
    out = RESULTS_DIR / name
    config = BenchConfig(out=out, **kwargs)
    start = time.perf_counter()

    def status(model: str, step: str) -> None:
        print(f"[{name} {time.perf_counter() - start:7.1f}s] {model}: {step}", flush=True)

    document = run_bench(config, status=status)
    report.write_reports(document, out)
    return document


def _section(name: str) -> str | None:
    path = RESULTS_DIR / name / "results.json"
    if not path.exists():
        return None
    document = json.loads(path.read_text())
    title = RUNS[name][0]
    chart = f"results/{name}/speedup.png" if (RESULTS_DIR / name / "speedup.png").exists() else None
    body = report.markdown_report(document, chart, title=title)
    return body


def render() -> str:
    """Assemble RESULTS.md from the stored runs and snippets."""
    parts = [HEADER]
    for name in RUNS:
        section = _section(name)
        if section:
            parts.append(section)
    for name in SCRIPTS:
        path = RESULTS_DIR / name / "results.md"
        if path.exists():
            parts.append(path.read_text())
    parts.extend(p.read_text() for p in EXTRA_SECTIONS if p.exists())
    for title, folder in SNIPPET_DIRS.items():
        # A module's combined snippet (RESULTS_*.md) stands for its parts when it exists.
        snippets = sorted(folder.glob("RESULTS_*.md")) or sorted(folder.glob("*.md"))
        if snippets and not snippets[0].name.startswith("RESULTS_"):
            parts.append(f"## {title}\n")  # loose snippets: give them a heading
        parts.extend(p.read_text().rstrip() + "\n" for p in snippets)
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", help="comma-separated runs to redo: " + ", ".join([*RUNS, *SCRIPTS])
    )
    parser.add_argument("--render", action="store_true", help="only reassemble RESULTS.md")
    args = parser.parse_args(argv)
    if not args.render:
        known = [*RUNS, *SCRIPTS]
        names = args.only.split(",") if args.only else known
        unknown = [n for n in names if n not in known]
        if unknown:
            parser.error(f"unknown run {unknown[0]!r}; runs: {', '.join(known)}")
        for name in names:
            run(name)
    RESULTS_MD.write_text(render())
    print(f"wrote {RESULTS_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
