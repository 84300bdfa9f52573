"""The HTML report of an explained optimization (``graphopt optimize --report report.html``).

:func:`render_report_html` turns a run's JSON report (:meth:`OptimizeReport.to_json`) and its
:class:`~optimizer.explain.rewrites.OptimizationExplanation` into one self-contained page:
inline CSS, inline SVG drawings and a few lines of inline script, nothing fetched, so the file
opens offline and can be mailed or archived as is. Sections: the run's summary, the drift
bisection, the whole graph before and after, the table of rewrites, each rewrite with its
drawings, the segments of equality-saturation blocks, and every applied rule with its source
and proof.

The page records script errors into its ``#page-errors`` list (``window.onerror``), and its
closing script writes ``script ran`` into ``#script-status``: a headless browser's rendered
DOM then tells whether the page ran cleanly.
"""

from __future__ import annotations

import contextlib
import html
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from optimizer.explain.chain import BLOCK, STEP
from optimizer.explain.rewrites import (
    OptimizationExplanation,
    RewriteRecord,
    explain_optimization,
)
from optimizer.ir import Graph
from optimizer.search.base import Checkpoint, recording

__all__ = ["HtmlReport", "render_report_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2630;margin:0;
background:#fafbfc}
main{max-width:1200px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid
#d8dee4;padding-bottom:4px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;background:#fff;margin:6px 0}
th,td{border:1px solid #d8dee4;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f6}td.num{text-align:right;font-variant-numeric:tabular-nums;
white-space:nowrap}
tr.blamed td{background:#fff1e6}tr.blamed td:first-child{border-left:4px solid #d4651a}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12.5px}
pre{background:#f4f6f8;border:1px solid #d8dee4;padding:8px;overflow:auto;white-space:pre}
.muted{color:#5b6672}.ok{color:#1a7f37}.bad{color:#c8372d}
.callout{background:#fff;border:1px solid #d8dee4;border-left:4px solid #d4651a;padding:8px 12px;
margin:8px 0}
.callout.none{border-left-color:#1a7f37}
.pair{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.pair figure{margin:0;background:#fff;border:1px solid #d8dee4;padding:6px;overflow:auto;
max-width:100%}
figcaption{font-size:12px;color:#5b6672;margin-bottom:4px}
details{background:#fff;border:1px solid #d8dee4;margin:6px 0;padding:4px 10px}
details>summary{cursor:pointer;font-weight:600}
.legend span{display:inline-block;padding:0 6px;margin-right:8px;border-radius:4px}
#page-errors li{color:#c8372d}
input#filter{padding:4px 8px;width:260px;margin:4px 0}
"""

_HEAD_SCRIPT = """
window.graphoptErrors = [];
window.onerror = function (message, source, line) {
  var text = String(message) + " (" + source + ":" + line + ")";
  window.graphoptErrors.push(text);
  var list = document.getElementById("page-errors");
  if (list && window.graphoptListed) {
    var li = document.createElement("li"); li.textContent = text; list.appendChild(li);
  }
  return false;
};
"""

_TAIL_SCRIPT = """
(function () {
  var errors = document.getElementById("page-errors");
  (window.graphoptErrors || []).forEach(function (text) {
    var li = document.createElement("li"); li.textContent = text; errors.appendChild(li);
  });
  window.graphoptListed = true;
  var rows = document.querySelectorAll("#rewrite-table tbody tr");
  var filter = document.getElementById("filter");
  if (filter) {
    filter.addEventListener("input", function () {
      var q = filter.value.toLowerCase();
      rows.forEach(function (row) {
        row.style.display = row.textContent.toLowerCase().indexOf(q) >= 0 ? "" : "none";
      });
    });
  }
  document.querySelectorAll("a[data-open]").forEach(function (a) {
    a.addEventListener("click", function () {
      var target = document.getElementById(a.getAttribute("data-open"));
      if (target) { target.open = true; }
    });
  });
  var status = document.getElementById("script-status");
  status.textContent = "script ran";
  status.setAttribute("data-rewrites", String(rows.length));
})();
"""


class HtmlReport:
    """``graphopt optimize --report FILE.html`` in three calls: run the optimization inside
    :meth:`recording`, pass :meth:`explain` as ``optimize_file``'s ``on_graphs`` (it explains
    the run before the model is written, while the original's weights are readable), then
    :meth:`write` the page (atomically) from the run's report.

    ``model`` is the input's path as given; ``input_shapes`` and ``device`` the check's.
    """

    def __init__(
        self,
        model: str,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
        device: str = "cpu",
    ) -> None:
        self.model, self.input_shapes, self.device = model, input_shapes, device
        self.checkpoints: list[Checkpoint] = []

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Record the search's graphs (:func:`optimizer.search.base.recording`)."""
        with recording() as self.checkpoints:
            yield

    def explain(self, original: Graph, cleaned: Graph, rewritten: Graph) -> OptimizationExplanation:
        """``optimize_file``'s ``on_graphs`` hook."""
        return explain_optimization(
            original, cleaned, rewritten, self.checkpoints,
            input_shapes=self.input_shapes, device=self.device,
        )  # fmt: skip

    def write(self, report: Any, path: str | os.PathLike) -> None:
        """Render ``report`` (an ``OptimizeReport`` whose run went through :meth:`explain`)
        to ``path``, atomically."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            generator = f"graphopt {version('graphopt')}"
        except PackageNotFoundError:  # pragma: no cover - running from a checkout
            generator = "graphopt"
        page = render_report_html(
            report.to_json(), report.extra["on_graphs"], model=self.model, generator=generator
        )
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, path)


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


def _cost(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _anchor(rule: str) -> str:
    return "rule-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in rule)


def render_report_html(
    report: Mapping[str, Any],
    explanation: OptimizationExplanation,
    *,
    model: str = "",
    generator: str = "graphopt",
) -> str:
    """The page (see the module docstring). ``report`` is the run's JSON report, ``model`` the
    input's path as the user gave it."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>graphopt: explained optimization of {_e(model or 'a model')}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_HEAD_SCRIPT}</script>",
        "</head><body><main>",
        f"<h1>Explained optimization of <code>{_e(model or 'the model')}</code></h1>",
        '<ul id="page-errors"></ul>',
        _summary(report, explanation),
        _drift(report, explanation),
        _overview(explanation),
        _rewrite_table(explanation),
        _rewrite_details(explanation),
        _segments(explanation),
        _rules(explanation),
        f'<p class="muted">Written by {_e(generator)}. '
        '<span id="script-status">script did not run</span></p>',
        "</main>",
        f"<script>{_TAIL_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _summary(report: Mapping[str, Any], ex: OptimizationExplanation) -> str:
    search = report.get("search") or {}
    before, after = report.get("before") or {}, report.get("after") or {}
    rows: list[tuple[str, str]] = [("output", f"<code>{_e(report.get('output') or '-')}</code>")]
    if search:
        ratio = search["cost_after"] / search["cost_before"] if search.get("cost_before") else 1.0
        rows.append(
            (
                "search",
                f"{_e(search.get('algorithm'))}: {len(search.get('steps', []))} rewrites, "
                f"estimated cost {_cost(search.get('cost_before'))} → "
                f"{_cost(search.get('cost_after'))} (×{ratio:.3f}), "
                f"{search.get('seconds', 0.0):.2f} s, stopped: {_e(search.get('stopped_by'))}",
            )
        )
    else:
        rows.append(("search", "no rule search ran"))
    rows.append(("nodes", f"{before.get('nodes', '-')} → {after.get('nodes', '-')}"))
    if report.get("checked"):
        rows.append(
            (
                "numeric check",
                '<span class="ok">outputs match</span> (largest absolute difference '
                f"{_num(report.get('max_abs_error'), 3)})",
            )
        )
    else:
        rows.append(("numeric check", "not run (--no-check)"))
    guard = report.get("guard")
    if guard:
        speed = f", measured {guard['speedup']:.3f}×" if guard.get("speedup") else ""
        text = f"kept the {_e(guard.get('kept'))} model{speed}: {_e(guard.get('reason'))}"
        if guard.get("kept") == "cleaned" and ex.rewrites:
            text += (
                ". The file written is the clean-up passes' result; the rewrites below are "
                "the search's, which the guard did not keep"
            )
        rows.append(("guard", text))
    rows.append(("time", f"{report.get('seconds', 0.0):.2f} s"))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<section id="summary"><h2>Summary</h2><table>{body}</table></section>'


def _drift(report: Mapping[str, Any], ex: OptimizationExplanation) -> str:
    d = ex.drift
    out = ['<section id="drift"><h2>Drift bisection</h2>']
    if (report.get("guard") or {}).get("kept") == "cleaned" and ex.rewrites:
        out.append(
            '<p class="muted">The guard kept the clean-up passes\' result, so the file written '
            "does not have this drift: the bisection explains the rule search's result.</p>"
        )
    cls = "callout none" if d.available and (d.total == 0.0 or d.blamed_link is None) else "callout"
    out.append(f'<div class="{cls}" id="drift-summary"><p>{_blame_html(ex)}</p></div>')
    if d.available and d.probes:
        out.append(
            '<p class="muted">Largest absolute difference from the original model\'s outputs '
            "on the numeric check's inputs, after each link of the chain of graphs from the "
            "original to the optimized model that ran (the bisection keeps the drift below "
            f"half of the total, {_num(d.threshold, 3)}, on its left and at or above it on "
            f"its right; {d.runs} onnxruntime runs).</p>"
        )
        top = max((x for _, _, x in d.probes if math.isfinite(x)), default=0.0) or 1.0
        rows = []
        for link, label, value in d.probes:
            width = 0 if not math.isfinite(value) else max(1, int(240 * value / top))
            bar = (
                f'<svg width="244" height="12" role="img" aria-label="{_e(_num(value))}">'
                f'<rect x="0" y="1" width="{width if value else 0}" height="10" '
                f'fill="{"#d4651a" if link == d.blamed_link else "#8a96a3"}"/></svg>'
            )
            blamed = ' class="blamed"' if link == d.blamed_link else ""
            rows.append(
                f"<tr{blamed}><td class=num>{link + 1}</td><td>{_e(label)}</td>"
                f"<td class=num>{_num(value)}</td><td>{bar}</td></tr>"
            )
        out.append(
            '<table id="drift-table"><thead><tr><th>link</th><th>graph after</th>'
            "<th>drift</th><th></th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        )
    if d.note:
        out.append(f'<p class="muted">{_e(d.note)}</p>')
    out.append("</section>")
    return "".join(out)


def _blame_html(ex: OptimizationExplanation) -> str:
    d = ex.drift
    if not d.available or d.total == 0.0 or d.blamed_link is None:
        return _e(d.summary)
    steps = ", ".join(
        f'<a href="#rewrite-{k + 1}" data-open="rewrite-{k + 1}">rewrite {k + 1}</a>'
        for k in d.blamed_steps[:12]
    )
    rules = ", ".join(
        f'<a href="#{_anchor(r)}"><code class="blamed-rule">{_e(r)}</code></a>'
        for r in d.blamed_rules
    )
    return (
        f"Most of the numeric difference comes from {rules}"
        + (f" ({steps})" if steps else "")
        + f": {_e(d.summary)}."
    )


def _overview(ex: OptimizationExplanation) -> str:
    out = ['<section id="overview"><h2>The graph before and after</h2>']
    if ex.overview_before:
        out.append(f'<p class="muted">{_e(ex.overview_note)}</p><div class="pair">')
        out.append(f"<figure><figcaption>original</figcaption>{ex.overview_before}</figure>")
        out.append(f"<figure><figcaption>optimized</figcaption>{ex.overview_after}</figure>")
        out.append("</div>")
    else:
        out.append(f'<p class="muted">{_e(ex.overview_note or "not drawn")}</p>')
    out.append("</section>")
    return "".join(out)


def _proof_cell(ex: OptimizationExplanation, rule: str) -> str:
    info = ex.proofs.get(rule)
    if info is None:
        return '<span class="muted">not in the library</span>'
    cls = "ok" if info.status == "proved" else "bad" if info.status != "not re-proved" else "muted"
    return f'<span class="{cls}">{_e(info.status)}</span> ({_e(info.method)})'


def _where(record: RewriteRecord) -> str:
    return ", ".join(f"<code>{_e(n)}</code>" for n in record.nodes_matched)


def _how(record: RewriteRecord, ex: OptimizationExplanation) -> str:
    if record.kind == STEP:
        note = ex.links[record.link]["note"] if record.link is not None else ""
        return f"replayed{' outside the e-graph' if note else ''}"
    if record.kind == BLOCK:
        return "in a block"
    return "-"


def _rewrite_table(ex: OptimizationExplanation) -> str:
    out = ['<section id="rewrites"><h2>Applied rewrites</h2>']
    if not ex.rewrites:
        out.append("<p>The search applied no rewrite.</p></section>")
        return "".join(out)
    out.append(
        "<p class=\"muted\">In the order of the search's trace. Costs are the cost model's "
        "estimates of the whole graph (equality saturation attributes its costs per "
        'application). <input id=filter type=search placeholder="filter rows" '
        'aria-label="filter rewrites"></p>'
    )
    blamed = set(ex.drift.blamed_steps)
    rows = []
    for r in ex.rewrites:
        delta = r.cost_after - r.cost_before
        cls = ' class="blamed"' if r.index in blamed else ""
        rows.append(
            f'<tr{cls} id="row-{r.index + 1}"><td class=num>'
            f'<a href="#rewrite-{r.index + 1}" data-open="rewrite-{r.index + 1}">{r.index + 1}</a>'
            f'</td><td><a href="#{_anchor(r.rule)}"><code class="rule-name">{_e(r.rule)}</code>'
            f"</a></td><td>{_where(r)}</td><td class=num>{_cost(r.cost_before)}</td>"
            f"<td class=num>{_cost(r.cost_after)}</td><td class=num>{delta:+,.0f}</td>"
            f"<td>{_e(r.algorithm)} · {_how(r, ex)}</td><td>{_proof_cell(ex, r.rule)}</td>"
            f"<td class=num>{_num(r.drift_after)}</td></tr>"
        )
    out.append(
        '<table id="rewrite-table"><thead><tr><th>#</th><th>rule</th><th>where (nodes matched)'
        "</th><th>cost before</th><th>cost after</th><th>Δ</th><th>search</th><th>proof</th>"
        "<th>drift after</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )
    out.append("</section>")
    return "".join(out)


def _rewrite_details(ex: OptimizationExplanation) -> str:
    if not ex.rewrites:
        return ""
    out = ['<section id="rewrite-details"><h2>Each rewrite</h2>']
    for r in ex.rewrites:
        info = ex.proofs.get(r.rule)
        out.append(
            f'<details id="rewrite-{r.index + 1}"><summary>Rewrite {r.index + 1}: '
            f"<code>{_e(r.rule)}</code> at {_where(r)}</summary>"
        )
        if info is not None:
            out.append(
                f"<p>{_e(info.comment)} — <code>{_e(info.location)}</code>; {_e(info.summary)}.</p>"
            )
        out.append(
            f"<p>Estimated cost {_cost(r.cost_before)} → {_cost(r.cost_after)}; made by "
            f"{_e(r.algorithm) or 'the search'}"
            + (f"; drift after it: {_num(r.drift_after)}" if r.drift_after is not None else "")
            + ".</p>"
        )
        if r.before_svg:
            out.append(
                '<p class="legend"><span style="background:#fde2e1">matched</span>'
                '<span style="background:#dcf3e1">result</span>'
                "<span>white: neighbours</span></p>"
            )
            out.append('<div class="pair">')
            out.append(f"<figure><figcaption>before</figcaption>{r.before_svg}</figure>")
            out.append(f"<figure><figcaption>after</figcaption>{r.after_svg}</figure>")
            out.append("</div>")
        if r.segments:
            links = ", ".join(f'<a href="#segment-{s + 1}">segment {s + 1}</a>' for s in r.segments)
            out.append(f"<p>Part of {links} of its block.</p>")
        if r.drawing_note:
            out.append(f'<p class="muted">{_e(r.drawing_note)}</p>')
        out.append("</details>")
    out.append("</section>")
    return "".join(out)


def _segments(ex: OptimizationExplanation) -> str:
    if not ex.segments:
        return ""
    out = [
        '<section id="segments"><h2>Segments of rewrite blocks</h2>',
        '<p class="muted">Where rewrites could not be replayed one by one (equality '
        "saturation extracts its result from an e-graph), the change is cut at the values it "
        "left in place; each segment is attributed to the steps whose rule made its nodes or "
        "whose matched nodes it replaced.</p>",
    ]
    for k, s in enumerate(ex.segments):
        steps = ", ".join(f'<a href="#rewrite-{i + 1}">{i + 1}</a>' for i in s.steps) or "none"
        blamed = " (named by the drift bisection)" if ex.drift.blamed_segment == k else ""
        out.append(
            f'<details id="segment-{k + 1}"><summary>Segment {k + 1}{blamed}: '
            f"{_e(', '.join(s.rules) or 'no step attributed: the extraction chose it')}</summary>"
            f"<p>Rewrites {steps}; replaces "
            f"{', '.join(f'<code>{_e(n)}</code>' for n in s.replaced) or 'nothing named'}.</p>"
        )
        if s.before_svg:
            out.append(
                f'<div class="pair"><figure><figcaption>before</figcaption>{s.before_svg}'
                f"</figure><figure><figcaption>after</figcaption>{s.after_svg}</figure></div>"
            )
        else:
            out.append('<p class="muted">not drawn (the report draws the first segments)</p>')
        out.append("</details>")
    out.append("</section>")
    return "".join(out)


def _rules(ex: OptimizationExplanation) -> str:
    if not ex.proofs:
        return ""
    out = ['<section id="rules"><h2>The rules and their proofs</h2>']
    for name, p in ex.proofs.items():
        uses = sum(r.rule == name for r in ex.rewrites)
        out.append(
            f'<h3 id="{_anchor(name)}"><code>{_e(name)}</code> '
            f'<span class="muted">({_e(p.family)}, applied {uses}×)</span></h3>'
            f"<p>{_e(p.comment)}</p><pre>{_e(p.source)}</pre>"
            f"<table><tr><th>file</th><td><code>{_e(p.location)}</code></td></tr>"
            f"<tr><th>proof</th><td>{_proof_cell(ex, name)}: {_e(p.summary)}</td></tr>"
        )
        if p.message:
            out.append(f"<tr><th>verifier</th><td>{_e(p.message)}</td></tr>")
        if p.instances:
            shown = "".join(f"<li><code>{_e(i)}</code></li>" for i in p.instances[:4])
            out.append(f"<tr><th>proof instances</th><td><ul>{shown}</ul></td></tr>")
        if p.numeric:
            out.append(f"<tr><th>numeric test</th><td>{_e(p.numeric)}</td></tr>")
        origin = {
            "cache": "the verifier's cache",
            "verified now": "verified while writing this report",
        }.get(p.origin, p.origin)
        out.append(f"<tr><th>verdict from</th><td>{_e(origin)}</td></tr></table>")
    out.append("</section>")
    return "".join(out)
