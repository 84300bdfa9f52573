"""Render a benchmark document (``results.json``) as a Markdown table and a PNG chart.

The Markdown shows, per model, graphopt's optimize time, node counts and cost estimate, the
original's latency on onnxruntime-all, and every system's speedup over it measured in the same
run (median of per-round ratios, with the quartiles of those ratios); a system whose outputs
differ from the original's is marked and left out of its geometric mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optimizer.bench.runner import CONTROL, GRAPHOPT, ORIGINAL

#: Systems in the order the tables and the chart show them.
ORDER = (GRAPHOPT, "onnxsim", "onnxoptimizer", "onnxscript", "ort-transformers")
TORCH_SYSTEMS = ("torch-eager", "torch-inductor", "torch-graphopt")

_STATUS_MARK = {
    "check-failed": "check failed",
    "failed": "failed",
    "crashed": "crashed",
    "timeout": "timeout",
    "unavailable": "not installed",
    "skipped": "n/a",
}


def _systems(document: dict[str, Any], wanted: tuple[str, ...]) -> list[str]:
    seen: dict[str, None] = {}
    for entry in document.get("models", []):
        for system in entry.get("systems", {}):
            seen.setdefault(system, None)
    known = [s for s in wanted if s in seen]
    return known


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def speedup_cell(result: dict[str, Any] | None, *, quartiles: bool = True) -> str:
    """``1.07x (1.05-1.08)``; the status for a system that produced nothing; a cross when the
    outputs differ from the original's."""
    if not result:
        return "-"
    if result.get("status") != "ok":
        return _STATUS_MARK.get(result.get("status", ""), str(result.get("status")))
    if result.get("speedup") is None:
        return "-"
    cell = f"{result['speedup']:.3f}x"
    if quartiles and result.get("speedup_q1") is not None and result.get("speedup_q3") is not None:
        cell += f" ({result['speedup_q1']:.2f}-{result['speedup_q3']:.2f})"
    if result.get("outputs_match") is False:
        err = result.get("max_abs_error")
        detail = f" (max abs error {err:.1g})" if err is not None else ""
        cell += f" ✗ outputs differ{detail}" if quartiles else " ✗"
    return cell


def _geomean_row(document: dict[str, Any], systems: list[str], lead_cells: int) -> str:
    summary = document.get("summary", {})
    means = summary.get("geomean_speedup", {})
    counted = summary.get("models_counted", {})
    attempted = summary.get("models_attempted", {})
    cells = ["**geometric mean**"] + [""] * (lead_cells - 2)
    control = summary.get("control_geomean")
    cells.append("-" if control is None else f"{control:.3f}x")
    for system in systems:
        mean = means.get(system)
        cells.append(
            "-" if mean is None
            else f"**{mean:.3f}x** ({counted.get(system, 0)}/{attempted.get(system, 0)})"
        )  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def markdown_table(document: dict[str, Any]) -> str:
    """The main table: one row per model, one speedup column per optimizer."""
    systems = _systems(document, ORDER)
    head = ["model", "nodes", "graphopt s", "cost after/before", "ORT-all ms", "A/A control"]
    head += systems
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in document.get("models", []):
        if entry.get("status") != "ok":
            lines.append(
                f"| {entry['name']} | error: {entry.get('error', '?')} |" + " |" * (len(head) - 2)
            )
            continue
        res = entry["systems"]
        orig, opt = res.get(ORIGINAL, {}), res.get(GRAPHOPT, {})
        nodes = f"{_fmt(orig.get('nodes'), 'd')} → {_fmt(opt.get('nodes'), 'd')}"
        ratio = None
        if orig.get("cost") and opt.get("cost") is not None:
            ratio = opt["cost"] / orig["cost"]
        row = [
            entry["name"], nodes, _fmt(opt.get("optimize_seconds"), ".2f"), _fmt(ratio, ".3f"),
            _fmt(orig.get("latency_ms"), ".2f"), speedup_cell(res.get(CONTROL)),
        ] + [speedup_cell(res.get(s)) for s in systems]  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    lines.append(_geomean_row(document, systems, 6))
    return "\n".join(lines)


def torch_table(document: dict[str, Any]) -> str | None:
    """Latency and compile time of torch eager / inductor (and graphopt's torch backend once
    it runs), beside onnxruntime-all on the original model; None without torch rows."""
    systems = _systems(document, TORCH_SYSTEMS)
    if not systems:
        return None
    head = ["model", "ORT-all ms", "graphopt+ORT ms"]
    fresh = any(
        "compile_cold_seconds" in r
        for entry in document.get("models", [])
        for r in entry.get("systems", {}).values()
    )
    for s in systems:
        head += [f"{s} ms", f"{s} compile s"]
        if fresh and s != "torch-eager":
            head += [f"{s} cold s", f"{s} warm s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in document.get("models", []):
        if entry.get("status") != "ok":
            continue
        res = entry["systems"]
        # The torch variants ran in their own loop against the original: its latency there.
        reference = entry.get("torch_reference_ms", res.get(ORIGINAL, {}).get("latency_ms"))
        row = [
            entry["name"],
            _fmt(reference, ".2f"),
            _fmt(res.get(GRAPHOPT, {}).get("latency_ms"), ".2f"),
        ]
        for s in systems:
            r = res.get(s, {})
            if r.get("status", "ok") != "ok":
                row += [_STATUS_MARK.get(r["status"], r["status"]), "-"]
            else:
                row += [_fmt(r.get("latency_ms"), ".1f"), _fmt(r.get("compile_seconds"), ".1f")]
            if fresh and s != "torch-eager":
                row += [
                    _fmt(r.get("compile_cold_seconds"), ".1f"),
                    _fmt(r.get("compile_warm_seconds"), ".1f"),
                ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def machine_section(document: dict[str, Any]) -> str:
    """The run's machine and settings, for the heading of a results section."""
    m = document.get("machine", {})
    cfg = document.get("config", {})
    versions = ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items() if v)
    gpus = ", ".join(m.get("gpus") or []) or "none"
    return "\n".join([
        f"- machine: {m.get('cpu')} ({', '.join(m.get('isa') or [])}), "
        f"{m.get('usable_cpus')} usable CPUs ({m.get('physical_cores')} physical cores), "
        f"{m.get('memory_gib')} GiB, GPU: {gpus}; {m.get('os')}, Python {m.get('python')}",
        f"- software: {versions}",
        f"- protocol: device {cfg.get('device')}, batch {cfg.get('batch')}, onnxruntime "
        f"ORT_ENABLE_ALL, {cfg.get('threads')} intra-op threads, spinning off, "
        f"{cfg.get('rounds')} interleaved rounds, samples of at least "
        f"{1000 * (cfg.get('sample_seconds') or 0):.0f} ms; speedup = median over rounds of "
        f"t(original) / t(system), quartiles in brackets; the A/A control is a second "
        f"session of the unmodified model timed the same way (the protocol's noise floor); "
        f"search: {cfg.get('search')}" + (
            f" ({cfg['time_limit']:g} s)" if cfg.get('time_limit') is not None else ""
        ),
        f"- started {document.get('started')}, took {document.get('seconds')} s",
    ])  # fmt: skip


def markdown_report(
    document: dict[str, Any], chart: str | None = None, *, title: str | None = None
) -> str:
    """A complete Markdown report of one run (machine, tables, chart link)."""
    heading = title or f"Suite `{document.get('suite')}`"
    parts = [
        f"## {heading}", "", machine_section(document), "",
        markdown_table(document),
    ]  # fmt: skip
    torch_rows = torch_table(document)
    if torch_rows:
        legend = "torch (latency per call; compile = first compiled call in this process"
        if "cold s" in torch_rows:
            legend += (
                "; cold / warm = the first compiled call in a fresh process over empty caches,"
                " then in another over the caches the cold run filled (inductor's FX graph and"
                " autograd caches, graphopt's compile cache)"
            )
        parts += ["", legend + "):", "", torch_rows]
    if chart:
        parts += ["", f"![speedup per model, suite {document.get('suite')}]({chart})"]
    return "\n".join(parts) + "\n"


def write_chart(document: dict[str, Any], path: Path) -> Path | None:
    """Grouped bar chart of speedup per model per system (log axis) as a PNG; None when
    matplotlib is not installed (``pip install 'graphopt[bench]'``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    systems = _systems(document, ORDER + TORCH_SYSTEMS)
    entries = [e for e in document.get("models", []) if e.get("status") == "ok"]
    if not entries or not systems:
        return None
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(entries) + 2), 4.5))
    width = 0.8 / len(systems)
    for k, system in enumerate(systems):
        xs, ys = [], []
        for i, entry in enumerate(entries):
            r = entry["systems"].get(system, {})
            if r.get("status") == "ok" and r.get("speedup"):
                xs.append(i + (k - (len(systems) - 1) / 2) * width)
                ys.append(r["speedup"])
        ax.bar(xs, ys, width=width, label=system)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(entries)))
    ax.set_xticklabels([e["name"] for e in entries], rotation=30, ha="right")
    ax.set_ylabel("speedup over onnxruntime-all (log)")
    ax.set_title(f"suite {document.get('suite')}: {document.get('machine', {}).get('cpu')}")
    ax.legend(fontsize="small", ncols=min(3, len(systems)))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_reports(document: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write ``results.md`` and ``speedup.png`` beside ``results.json`` in ``out``."""
    out = Path(out)
    written: dict[str, Path] = {}
    chart = write_chart(document, out / "speedup.png")
    if chart is not None:
        written["png"] = chart
    md = out / "results.md"
    md.write_text(markdown_report(document, chart.name if chart else None))
    written["markdown"] = md
    return written
