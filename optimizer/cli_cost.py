"""``graphopt cost``: what a cost model says about a model, per op type and per node.

Registered on the main app in :mod:`optimizer.cli` (``app.command()(cost)``); errors follow
that module's conventions (one line on stderr, exit 2 for bad input).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from optimizer.errors import GraphoptError

MODELS = ("analytic", "measured")


def _parse_dims(specs: list[str] | None) -> dict[str, int]:
    dims: dict[str, int] = {}
    for text in specs or ():
        name, sep, value = text.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit() or int(value) < 1:
            raise GraphoptError(f"bad --dim {text!r}: expected NAME=POSITIVE_INT, e.g. batch=8")
        dims[name.strip()] = int(value)
    return dims


def format_cost(value: float, units: str) -> str:
    """``1.23 ms`` for seconds, ``4.56 G`` for FLOP-equivalents."""
    if units == "seconds":
        for scale, unit in ((1.0, "s"), (1e-3, "ms"), (1e-6, "us")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {unit}"
        return f"{value * 1e9:.3g} ns"
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g}"


def cost_report(graph, model, *, top: int) -> dict[str, Any]:
    """Per-op-type and per-node estimates of ``model`` (a cost model) on ``graph``."""
    from optimizer.rewrite.match import context

    order = context(graph).order
    free = model.free_nodes(order)
    per_node = []
    for node in order:
        if node in free:
            continue
        estimate = model.estimate(node) if hasattr(model, "estimate") else None
        meta = graph.node_meta.get(node)
        op = f"{node.domain}::{node.op}" if node.domain else node.op
        entry = {
            "name": meta.name if meta is not None and meta.name else f"{node.op}#{node.serial}",
            "op": op,
            "estimate": model.node_cost(node),
        }
        if estimate is not None:
            entry["source"] = estimate.source
            entry["signature"] = estimate.description
            if estimate.reason:
                entry["reason"] = estimate.reason
        per_node.append(entry)
    total = sum(e["estimate"] for e in per_node)
    by_op: dict[str, list[float]] = defaultdict(list)
    for e in per_node:
        by_op[e["op"]].append(e["estimate"])
    ops = sorted(
        (
            {"op": op, "count": len(v), "estimate": sum(v),
             "share": sum(v) / total if total else 0.0}
            for op, v in by_op.items()
        ),
        key=lambda e: (-e["estimate"], e["op"]),
    )  # fmt: skip
    ranked = sorted(per_node, key=lambda e: -e["estimate"])
    for e in ranked:
        e["share"] = e["estimate"] / total if total else 0.0
    return {
        "units": model.units,
        "total": total,
        "nodes": len(order),
        "free_nodes": len(free),
        "ops": ops,
        "top_nodes": ranked[: max(top, 0)],
    }


def cost(
    model: Annotated[Path, typer.Argument(help="The ONNX model to price.")],
    cost_model: Annotated[
        str, typer.Option("--model", help="Cost model: analytic (FLOPs, bytes) or measured.")
    ] = "analytic",
    calibrated: Annotated[
        bool,
        typer.Option(
            "--calibrated/--uncalibrated",
            help="analytic only: fit its weights to this device (seconds) instead of "
            "FLOP-equivalents.",
        ),
    ] = False,
    cache: Annotated[
        Path | None,
        typer.Option(help="Cache folder of timings and calibrations (default: user cache)."),
    ] = None,
    device: Annotated[str, typer.Option(help="Device to time on: cpu or cuda.")] = "cpu",
    threads: Annotated[
        int | None, typer.Option(min=1, help="onnxruntime intra-op threads (default: all CPUs).")
    ] = None,
    dim: Annotated[
        list[str] | None,
        typer.Option(help="Bind a symbolic dimension: NAME=VALUE (repeatable; others are 1)."),
    ] = None,
    top: Annotated[int, typer.Option(min=0, help="Show the N costliest nodes.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a cost model's estimate of MODEL: per op type, the costliest nodes, and the total."""
    # Imported here: optimizer.cli imports this module to register the command.
    from optimizer.cli import _guarded, err, out

    def action() -> None:
        import json

        from optimizer import onnx_io
        from optimizer.cost.analytic import AnalyticCost
        from optimizer.cost.device import DeviceSpec

        if cost_model not in MODELS:
            raise GraphoptError(f"unknown cost model {cost_model!r}: expected analytic or measured")
        bindings = _parse_dims(dim)
        if bindings and cost_model != "measured":
            raise GraphoptError("--dim applies to --model measured (analytic counts symbols as 1)")
        spec = DeviceSpec(device, threads)
        spec.providers()  # a missing CUDA provider is bad input, before any work
        graph, _ = onnx_io.load(model)
        if cost_model == "analytic":
            priced = (
                AnalyticCost.calibrated(device, threads=threads, cache_dir=cache)
                if calibrated
                else AnalyticCost()
            )
            report = cost_report(graph, priced, top=top)
            symbols = _graph_symbols(graph)
        else:
            from optimizer.cost.measured import MeasuredCost
            from optimizer.rewrite.match import context

            priced = MeasuredCost(spec, cache=cache, bindings=bindings).bind(graph)
            order = context(graph).order
            todo = [n for n in order if n not in priced.free_nodes(order)]
            with _bar(not as_json and err.is_terminal, err) as (bar, task):
                bar.update(task, total=len(todo))
                priced.prefetch(todo, progress=lambda done, _: bar.update(task, completed=done))
            report = cost_report(graph, priced, top=top)
            report["timing"] = {
                "timed": priced.stats["timed"],
                "cached": priced.stats["cache"],
                "fallback": priced.stats["fallback"],
                "fused": priced.stats["fused"],
                "seconds": round(priced.stats["timing_seconds"], 3),
                "cache_file": str(priced.cache_file) if priced.cache_file else None,
            }
            symbols = sorted(priced.symbols)
        report["model"] = str(model)
        report["cost_model"] = cost_model + (" (calibrated)" if calibrated else "")
        report["device"] = spec.describe() if report["units"] == "seconds" else None
        report["symbols"] = {s: bindings.get(s, 1) for s in symbols}
        if as_json:
            out.print_json(json.dumps(report))
            return
        _print(report, out)

    _guarded(action)


def _graph_symbols(graph) -> list[str]:
    from optimizer.ir import TensorType

    found = set()
    for node in graph.nodes(include_sources=True):
        for v in node.outputs:
            if isinstance(v.type, TensorType) and v.type.shape:
                found.update(d if isinstance(d, str) else "?" for d in v.type.shape
                             if not isinstance(d, int))  # fmt: skip
    return sorted(found)


class _bar:
    """A transient rich progress bar on stderr (disabled when not a terminal)."""

    def __init__(self, enabled: bool, console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("timing ops"), BarColumn(), MofNCompleteColumn(),
            console=console, transient=True, disable=not enabled,
        )  # fmt: skip

    def __enter__(self):
        self.progress.__enter__()
        return self.progress, self.progress.add_task("timing", total=None)

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)


def _print(report: dict[str, Any], console) -> None:
    units = report["units"]
    title = f"graphopt cost: {report['model']} ({report['cost_model']}, {units})"
    table = Table(title=escape(title), title_justify="left")
    for column, justify in (("op", "left"), ("count", "right"), ("estimate", "right"),
                            ("share", "right")):  # fmt: skip
        table.add_column(column, justify=justify)
    for e in report["ops"]:
        table.add_row(escape(e["op"]), str(e["count"]), format_cost(e["estimate"], units),
                      f"{100 * e['share']:.1f}%")  # fmt: skip
    table.add_section()
    table.add_row("total", str(sum(e["count"] for e in report["ops"])),
                  format_cost(report["total"], units), "100.0%")  # fmt: skip
    console.print(table)
    if report["top_nodes"]:
        nodes = Table(title=f"costliest {len(report['top_nodes'])} nodes", title_justify="left")
        sourced = any("source" in e for e in report["top_nodes"])
        for column in ("node", "op", "estimate", "share") + (("source",) if sourced else ()):
            nodes.add_column(column, overflow="fold")
        for e in report["top_nodes"]:
            source = e.get("source", "")
            if e.get("reason"):
                source += f" ({e['reason']})"
            row = [escape(e["name"]), escape(e["op"]), format_cost(e["estimate"], units),
                   f"{100 * e['share']:.1f}%"]  # fmt: skip
            nodes.add_row(*row, *([escape(source)] if sourced else []))
        console.print(nodes)
    line = f"total: {format_cost(report['total'], units)} over {report['nodes']} nodes"
    if report["free_nodes"]:
        line += f" ({report['free_nodes']} computable from constants, not counted)"
    console.print(line, markup=False, highlight=False)
    if report.get("device"):
        console.print(f"device: {report['device']}", markup=False, highlight=False)
    timing = report.get("timing")
    if timing:
        console.print(
            f"ops timed: {timing['timed']}, from cache: {timing['cached']}, fused into their "
            f"producer: {timing['fused']}, analytic fallback: {timing['fallback']} "
            f"({timing['seconds']:.2f} s timing; "
            f"cache {timing['cache_file']})",
            markup=False, highlight=False,
        )  # fmt: skip
    if report["symbols"]:
        bound = ", ".join(f"{k}={v}" for k, v in report["symbols"].items())
        console.print(f"symbolic dimensions bound: {bound}", markup=False, highlight=False)
