"""Equality saturation against the greedy pass on the model zoo: time, e-graph size, cost.

For each model (default: the ``quick`` suite plus ResNet-50, BERT-base and Inception-v3, their
ONNX exports cached by :func:`benchmarks.models.export`), prints one Markdown table row:
eqsat's seconds, iterations, e-nodes, why saturation stopped, the extraction method and the
ILP's outcome, the analytic cost before and after, then the greedy pass's
(:func:`optimizer.passes.rewrite.apply_rules` with the shipped rules) seconds and cost, and
whether eqsat's result computes the same outputs on onnxruntime.

    python -m benchmarks.search_eqsat_probe                     # the default models
    python -m benchmarks.search_eqsat_probe bert_tiny --time-limit 10 --max-enodes 5000

Costs are :class:`~optimizer.cost.AnalyticCost` FLOP-equivalents; "gain" is the cost removed,
as a share of the input's cost. Timings are wall clock on this machine (noisy when shared).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import models  # noqa: E402
from optimizer import onnx_io, runtime  # noqa: E402
from optimizer.cost import AnalyticCost  # noqa: E402
from optimizer.passes.rewrite import apply_rules, default_rules  # noqa: E402
from optimizer.search.base import Budget  # noqa: E402
from optimizer.search.eqsat import eqsat  # noqa: E402

DEFAULT_MODELS = (*models.SUITES["quick"], "resnet50", "bert_base", "inception_v3")

COLUMNS = (
    "model", "nodes", "eqsat s", "saturation s", "extraction s", "iters", "e-nodes",
    "stopped", "extraction", "ILP",
    "cost before", "eqsat cost", "eqsat gain", "greedy s", "greedy cost", "greedy gain",
    "same outputs",
)  # fmt: skip


def _gain(before: float, after: float) -> str:
    return f"{100 * (before - after) / before:.3f}%" if before else "-"


def probe(name: str, budget: Budget, check: bool = True) -> list[str]:
    """One table row for model ``name``."""
    path = models.export(name)
    graph, _ = onnx_io.load(path)
    cost = AnalyticCost()
    rules = default_rules()
    before = cost(graph)
    start = time.perf_counter()
    result, trace = eqsat(graph, rules, cost, budget)
    eq_seconds = time.perf_counter() - start
    start = time.perf_counter()
    greedy, _ = apply_rules(graph, rules)
    greedy_seconds = time.perf_counter() - start
    same = "-"
    if check and result is not graph:
        report = runtime.compare_models(str(path), onnx_io.to_proto(result))
        same = "yes" if report.ok else "NO"
    elif check:
        same = "input kept"
    extra = trace.extra
    return [
        name,
        str(len(graph.nodes())),
        f"{eq_seconds:.1f}",
        f"{extra.get('saturation_seconds', 0.0):.1f}",
        f"{extra.get('extraction_seconds', 0.0):.1f}",
        str(extra.get("iterations")),
        str(extra.get("enodes")),
        trace.stopped_by,
        str(extra.get("extraction", "-")),
        f"{extra.get('ilp_status', '-')} {extra.get('ilp_seconds', 0.0):.1f}s",
        f"{before:.4g}",
        f"{trace.cost_after:.4g}",
        _gain(before, trace.cost_after),
        f"{greedy_seconds:.1f}",
        f"{cost(greedy):.4g}",
        _gain(before, cost(greedy)),
        same,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(DEFAULT_MODELS))
    parser.add_argument("--time-limit", type=float, default=Budget.time_limit)
    parser.add_argument("--max-enodes", type=int, default=Budget.max_enodes)
    parser.add_argument("--max-iterations", type=int, default=Budget.max_iterations)
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")
    args = parser.parse_args(argv)
    budget = Budget(
        time_limit=args.time_limit,
        max_enodes=args.max_enodes,
        max_iterations=args.max_iterations,
    )
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for name in args.models:
        print("| " + " | ".join(probe(name, budget, not args.no_check)) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
