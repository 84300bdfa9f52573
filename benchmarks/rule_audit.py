"""Which shipped rules give real speed, and which does the cost model misprice?

``python -m benchmarks.rule_audit [--models nasrnn,bert_base] [--rounds 10] [--max-apply 64]``

For each model (default: the ``taso`` suite, from the zoo's cached ONNX exports), after the
clean-up passes (``eliminate-identity``, ``fold-constants``: the graph the guard compares
against), every shipped rule that matches (``default_rules()`` + ``MatchIndex.matches``;
commutations left out, as in :mod:`benchmarks.cost_rank`) is applied *on its own* wherever
it matches, to a fixed point (at most ``--max-apply`` applications and ``--apply-seconds``
per rule), then constants are folded. Each such candidate is

- checked numerically against the clean-up result (:func:`optimizer.runtime.compare_models`,
  graphopt's own tolerances);
- priced by the search's default cost model (``optimizer.api.cost_model(OptimizeOptions())``:
  the analytic model with onnxruntime's fusions priced in): the relative cost change;
- timed end to end against the clean-up result on onnxruntime at ORT_ENABLE_ALL, interleaved
  in one process (:func:`optimizer.cost.rerank.rerank`): the median speedup over rounds, with
  quartiles. Each model's timing batches include an *A/A control*, a second session of the
  clean-up result itself, so the table shows the run's noise floor beside every figure.

A rule's *verdict* is ``faster`` when the lower quartile of its speedup is above both 1 and
the control's upper quartile, ``slower`` when its upper quartile is below both 1 and the
control's lower quartile, else ``noise``. *Mispriced* marks a verdict the cost model gets the
wrong way round: a measured speedup the model prices as no gain (a search never takes it), or
a measured slowdown it prices as a gain (a search takes it and the guard throws the result
away).

Writes ``benchmarks/results/rule_audit.md`` and ``rule_audit.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._document import start_document
from optimizer import onnx_io, runtime
from optimizer.api import DEFAULT_ATOL, DEFAULT_RTOL, OptimizeOptions, cost_model
from optimizer.cost.device import DeviceSpec
from optimizer.cost.rerank import rerank
from optimizer.errors import CheckUnavailableError
from optimizer.ir import Graph
from optimizer.passes import fold_constants, run_passes
from optimizer.passes.rewrite import default_rules
from optimizer.rewrite.apply import apply_match
from optimizer.rewrite.match import MatchIndex, context
from optimizer.rewrite.rule import Rule

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "results"
#: Rules whose rewrites onnxruntime cannot tell apart from the input (operand order).
NEUTRAL_SUFFIXES = ("-commute",)
CONTROL = "A/A control"
CLEANUP = ("eliminate-identity", "fold-constants")


def audited_rules(rules: Sequence[Rule] | None = None) -> list[Rule]:
    """The rules the audit applies: ``rules`` or the shipped library, commutations left out."""
    chosen = default_rules().rules if rules is None else list(rules)
    return [r for r in chosen if not r.name.endswith(NEUTRAL_SUFFIXES)]


def matching_rules(graph: Graph, rules: Sequence[Rule]) -> Counter[str]:
    """How many matches each rule has in ``graph`` (one walk over the graph)."""
    index = MatchIndex(rules)
    return Counter(m.rule.name for m in index.matches(graph, opset=graph.meta.opset("")))


def fold(graph: Graph) -> Graph:
    """Constant folding without a size limit (see :func:`benchmarks.cost_rank._fold`: a Conv
    weight left as a Pad of an initializer makes onnxruntime refuse the model)."""
    return fold_constants(graph, size_limit=2**62)


def apply_everywhere(
    graph: Graph, rule: Rule, *, max_apply: int = 100, seconds: float = 10.0
) -> tuple[Graph, int]:
    """``graph`` with ``rule`` applied wherever it matches, to a fixed point: at most
    ``max_apply`` applications and ``seconds`` of work. Returns the graph and how many
    applications were made.

    One walk over the graph finds the matches; they are applied one after another while all
    their nodes are still in the graph (nodes upstream of a rewrite are untouched: the IR is
    hash-consed), then the graph is walked again, until a walk applies nothing.
    """
    index = MatchIndex([rule])
    opset = graph.meta.opset("")
    deadline = time.perf_counter() + seconds
    applied = 0
    refused: set[tuple] = set()
    progress = True
    while progress and applied < max_apply and time.perf_counter() < deadline:
        progress = False
        for match in list(index.matches(graph, opset=opset)):
            if applied >= max_apply or time.perf_counter() > deadline:
                break
            if match.key in refused:
                continue
            position = context(graph, opset).position
            if not all(n in position for n in match.nodes):
                continue  # an earlier application this walk rewrote part of it
            candidate = apply_match(graph, match, opset=opset)
            if candidate is None:
                refused.add(match.key)
                continue
            graph, applied, progress = candidate, applied + 1, True
    return graph, applied


def _max_abs_error(report: runtime.EquivalenceReport) -> float | None:
    errors = [o.max_abs_err for o in report.outputs if not math.isnan(o.max_abs_err)]
    return max(errors) if errors else None


def build_candidates(
    graph: Graph,
    rules: Sequence[Rule] | None = None,
    *,
    max_apply: int = 100,
    apply_seconds: float = 10.0,
    max_rules: int | None = None,
) -> list[dict[str, Any]]:
    """One candidate per rule that matches ``graph``: the rule applied everywhere (see
    :func:`apply_everywhere`) and constants folded, numerically checked against ``graph`` and
    priced by the search's default cost model. Each is a dict with ``rule``, ``matches``,
    ``applied``, ``nodes``, ``est_change`` (relative cost change), ``outputs_match``,
    ``max_abs_error``, ``seconds`` and the ``graph`` itself (None when the rule applied
    nowhere). At most ``max_rules`` rules, those with the most matches first."""
    rules = audited_rules(rules)
    by_name = {r.name: r for r in rules}
    counts = matching_rules(graph, rules)
    names = sorted(counts, key=lambda n: (-counts[n], n))[:max_rules]
    cost = cost_model(OptimizeOptions())
    base_cost = cost(graph)
    reference = onnx_io.to_proto(graph)
    found = []
    for name in names:
        start = time.perf_counter()
        rewritten, applied = apply_everywhere(
            graph, by_name[name], max_apply=max_apply, seconds=apply_seconds
        )
        entry: dict[str, Any] = {"rule": name, "matches": counts[name], "applied": applied}
        if applied:
            rewritten = fold(rewritten)
            report = runtime.compare_models(
                reference, onnx_io.to_proto(rewritten), rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL
            )
            entry.update(
                nodes=len(rewritten.nodes()),
                est_change=cost(rewritten) / base_cost - 1 if base_cost else 0.0,
                outputs_match=report.ok,
                max_abs_error=_max_abs_error(report),
                check=None if report.ok else report.summary()[:300],
            )
        entry["graph"] = rewritten if applied else None
        entry["seconds"] = round(time.perf_counter() - start, 2)
        found.append(entry)
    return found


def time_candidates(
    graph: Graph,
    candidates: list[dict[str, Any]],
    *,
    device: DeviceSpec,
    rounds: int = 10,
    sample_seconds: float = 0.03,
    batch: int = 6,
) -> dict[str, Any]:
    """Time every candidate that applied and matched against ``graph`` (end to end,
    interleaved; see :func:`optimizer.cost.rerank.rerank`), ``batch`` at a time, each batch
    with an A/A control. Fills ``speedup``, ``speedup_q1``, ``speedup_q3``, ``latency_ms``
    and ``control`` (the A/A figures of the candidate's batch), or ``refused``, into the
    candidates; returns the controls and the reference latency."""
    reference = onnx_io.to_proto(graph)
    timed = [c for c in candidates if c["graph"] is not None and c.get("outputs_match")]
    controls: list[dict[str, float]] = []
    ref_latency = None
    for first in range(0, len(timed) or 1, max(1, batch)):
        group = timed[first : first + batch]
        while True:
            try:
                ranked = rerank(
                    [c["graph"] for c in group] + [graph], reference, device=device,
                    rounds=rounds, sample_seconds=sample_seconds,
                )  # fmt: skip
                break
            except CheckUnavailableError as exc:  # find the candidate onnxruntime refuses
                bad = _refused(group, device)
                if bad is None:
                    raise
                bad["refused"] = str(exc).splitlines()[0][:300]
                group = [c for c in group if c is not bad]
        control = None
        for r in ranked:
            figures = {
                "speedup": r.speedup, "speedup_q1": r.speedup_q1, "speedup_q3": r.speedup_q3,
                "latency_ms": r.latency_ms,
            }  # fmt: skip
            if r.index == len(group):
                control = figures
                controls.append(figures)
                ref_latency = ref_latency or r.latency_ms * r.speedup
            else:
                group[r.index].update(figures)
        for c in group:
            c["control"] = control  # each verdict compares with its own batch's control
    return {"controls": controls, "reference_latency_ms": ref_latency}


def _refused(group: list[dict[str, Any]], device: DeviceSpec) -> dict[str, Any] | None:
    """The first candidate of ``group`` onnxruntime cannot load at ORT_ENABLE_ALL."""
    for c in group:
        try:
            options = device.with_opt_level("all").session_options()
            model = onnx_io.to_proto(c["graph"])
            runtime.make_session(model, device=device.device, options=options)
        except CheckUnavailableError:
            return c
    return None


def verdict(entry: dict[str, Any], control: dict[str, float] | None) -> str:
    """``faster``, ``slower`` or ``noise`` (see the module docstring); ``-`` if not timed."""
    if "speedup" not in entry:
        return "-"
    hi = max(1.0, control["speedup_q3"] if control else 1.0)
    lo = min(1.0, control["speedup_q1"] if control else 1.0)
    if entry["speedup_q1"] > hi:
        return "faster"
    if entry["speedup_q3"] < lo:
        return "slower"
    return "noise"


def mispriced(entry: dict[str, Any]) -> bool:
    """Whether the cost model prices a clear measured result the wrong way round."""
    est = entry.get("est_change")
    if est is None:
        return False
    return (entry.get("verdict") == "faster" and est >= 0) or (
        entry.get("verdict") == "slower" and est < 0
    )


def audit_graph(
    graph: Graph,
    rules: Sequence[Rule] | None = None,
    *,
    device: DeviceSpec | None = None,
    max_apply: int = 100,
    apply_seconds: float = 10.0,
    max_rules: int | None = None,
    rounds: int = 10,
    sample_seconds: float = 0.03,
    batch: int = 6,
) -> dict[str, Any]:
    """Audit ``graph`` (already cleaned up): every matching rule applied alone, checked,
    priced and timed against ``graph``. Returns ``{"nodes", "reference_latency_ms",
    "control", "rows"}``; rows are JSON-ready (see :func:`build_candidates`), with
    ``verdict`` and ``mispriced`` added."""
    device = device or DeviceSpec("cpu")
    rows = build_candidates(
        graph, rules, max_apply=max_apply, apply_seconds=apply_seconds, max_rules=max_rules
    )
    timing = time_candidates(
        graph, rows, device=device, rounds=rounds, sample_seconds=sample_seconds, batch=batch
    )
    controls = timing["controls"]
    control = controls[0] if controls else None
    for row in rows:
        row["verdict"] = verdict(row, row.get("control"))
        row["mispriced"] = mispriced(row)
        row.pop("graph", None)
    return {
        "nodes": len(graph.nodes()),
        "reference_latency_ms": timing["reference_latency_ms"],
        "control": control,
        "controls": controls,
        "rows": rows,
    }


def audit_model(name: str, args: argparse.Namespace, device: DeviceSpec) -> dict[str, Any]:
    """Audit one zoo model (its cached export, after the clean-up passes)."""
    from benchmarks import models

    start = time.perf_counter()
    graph, _ = onnx_io.load(models.export(name))
    graph, _ = run_passes(graph, CLEANUP)
    result = audit_graph(
        graph, device=device, max_apply=args.max_apply, apply_seconds=args.apply_seconds,
        max_rules=args.max_rules, rounds=args.rounds, sample_seconds=args.sample_seconds,
        batch=args.batch,
    )  # fmt: skip
    result["name"] = name
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


# ------------------------------------------------------------------ report


def _speedup(figures: dict[str, Any] | None) -> str:
    if not figures or "speedup" not in figures:
        return "-"
    return f"{figures['speedup']:.3f}x ({figures['speedup_q1']:.2f}-{figures['speedup_q3']:.2f})"


def _row_cells(model: str, row: dict[str, Any]) -> list[str]:
    est = row.get("est_change")
    if not row["applied"]:
        outputs = "did not apply"
    elif row.get("outputs_match"):
        outputs = "match"
    else:
        outputs = f"✗ {row.get('check') or 'differ'}"
    if row.get("refused"):
        outputs += f"; onnxruntime refused: {row['refused'][:80]}"
    return [
        model,
        f"`{row['rule']}`",
        f"{row['applied']} / {row['matches']}",
        str(row.get("nodes", "-")),
        "-" if est is None else f"{100 * est:+.2f}%",
        _speedup(row),
        row["verdict"] + (" **mispriced**" if row.get("mispriced") else ""),
        outputs,
    ]


def markdown(document: dict[str, Any]) -> str:
    config = document["config"]
    lines = [
        "### Rule audit: each shipped rule alone, measured end to end",
        "",
        f"Machine: {document['machine_line']}; load average (1 min) "
        f"{document['loadavg_start'][0]:.1f} at start, {document['loadavg_end'][0]:.1f} at "
        f"end; {document['seconds']:.0f} s. Per model, after the clean-up passes, each rule "
        f"that matches is applied alone wherever it matches (to a fixed point, at most "
        f"{config['max_apply']} applications), constants are folded, the outputs are checked "
        "against the clean-up result (rtol 1e-4, atol 1e-5), and the result is timed end to "
        "end against it on onnxruntime at ORT_ENABLE_ALL, interleaved "
        f"({config['rounds']} rounds, samples of at least {config['sample_seconds']} s; "
        "speedup = median of per-round ratios, quartiles in brackets). *applied / matches*: "
        "applications made / matches in the clean-up result. *est. cost*: the change of the "
        "search's default cost model (analytic, onnxruntime fusions priced in; negative = "
        "cheaper). The A/A control row times a second session of the clean-up result the "
        "same way (the noise floor). *verdict*: faster / slower when the quartiles clear "
        "both 1 and the control's; **mispriced** when the cost model prices it the other way.",
        "",
        "| model | rule | applied / matches | nodes | est. cost | measured speedup | verdict "
        "| outputs |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for m in document["models"]:
        if "error" in m:
            lines.append(f"| {m['name']} | error: {m['error']} |" + " |" * 6)
            continue
        lat = m.get("reference_latency_ms")
        control = _speedup(m.get("control"))
        lines.append(
            f"| {m['name']} | {CONTROL} ({lat:.2f} ms) | - | {m['nodes']} | - | {control} | - | - |"
            if lat
            else f"| {m['name']} | {CONTROL} | - | {m['nodes']} | - | - | - | - |"
        )
        ordered = sorted(m["rows"], key=lambda r: -r.get("speedup", 0.0))
        lines += ["| " + " | ".join(_row_cells(m["name"], r)) + " |" for r in ordered]
    lines += ["", *summary_lines(document), ""]
    lines.append(f"Rerun: `{document['command']}`")
    return "\n".join(lines) + "\n"


def summary_lines(document: dict[str, Any]) -> list[str]:
    """Bullets: the rules measured faster, slower, and the mispriced ones."""
    out = []
    for kind in ("faster", "slower"):
        found = [
            f"`{r['rule']}` on {m['name']} ({r['speedup']:.2f}x, est. "
            f"{100 * r['est_change']:+.1f}%)"
            for m in document["models"] if "rows" in m
            for r in m["rows"] if r["verdict"] == kind
        ]  # fmt: skip
        out.append(f"- Measured {kind}: " + ("; ".join(found) if found else "none") + ".")
    wrong = [
        f"`{r['rule']}` on {m['name']}"
        for m in document["models"] if "rows" in m
        for r in m["rows"] if r.get("mispriced")
    ]  # fmt: skip
    out.append("- Mispriced by the cost model: " + (", ".join(wrong) if wrong else "none") + ".")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated zoo models (default: the taso suite)")
    parser.add_argument("--max-apply", type=int, default=100, help="applications per rule")
    parser.add_argument("--apply-seconds", type=float, default=10.0, help="seconds per rule")
    parser.add_argument("--max-rules", type=int, default=12, help="rules per model")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--sample-seconds", type=float, default=0.03)
    parser.add_argument("--batch", type=int, default=6, help="candidates timed together")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    from benchmarks import models

    names = [m.strip() for m in args.models.split(",")] if args.models else models.SUITES["taso"]
    device = DeviceSpec(args.device, args.threads)
    start = time.perf_counter()
    document = start_document("graphopt-rule-audit/1", "benchmarks.rule_audit", args, argv, device)
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        try:
            entry = audit_model(name, args, device)
        except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the rest
            entry = {"name": name, "error": f"{type(exc).__name__}: {exc}"[:300]}
        document["models"].append(entry)
        for row in entry.get("rows", []):
            print(f"  {row['rule']:40s} {row['applied']:3d} applied  "
                  f"{_speedup(row):24s} {row['verdict']}", file=sys.stderr, flush=True)  # fmt: skip
        if "control" in entry:
            print(f"  {CONTROL:40s}              {_speedup(entry['control'])}",
                  file=sys.stderr, flush=True)  # fmt: skip
    document["loadavg_end"] = list(os.getloadavg())
    document["seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rule_audit.json").write_text(json.dumps(document, indent=1) + "\n")
    (args.out / "rule_audit.md").write_text(markdown(document))
    print(markdown(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
