"""``graphopt optimize --report report.html``: the page, the command line, and the page in a
headless browser (Chromium from Debian's ``chromium`` package; CI installs it).

The model (``rewrite_models.lossy_model``) gets exact rewrites and one that is lossy in
float32; the report must list every rewrite, show each applied rule's proof (or say it was not
re-proved), and name the lossy rule as the source of the drift.
"""

from __future__ import annotations

import html
import html.parser
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
from rewrite_models import LOSSY_RULE, lossy_model
from typer.testing import CliRunner

from optimizer.cli import app
from optimizer.verify.cache import ResultCache
from optimizer.verify.verifier import RuleResult

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p), None)
CHROMIUM = CHROMIUM if CHROMIUM and os.access(CHROMIUM, os.X_OK) else None
#: A rule whose verdict the test puts in the proof cache (the others are not re-proved).
CACHED_RULE = "relu-relu"

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [os.fspath(a) for a in args], catch_exceptions=False)


def _hermetic_proofs(cache_dir: Path, monkeypatch) -> None:
    """An isolated proof cache holding one verdict, and no time to verify the others."""
    from optimizer.passes.rewrite import default_rules

    monkeypatch.setenv("GRAPHOPT_CACHE_DIR", str(cache_dir))
    monkeypatch.setattr("optimizer.explain.proofs.VERIFY_BUDGET_S", 0.0)
    rule = next(r for r in default_rules().rules if r.name == CACHED_RULE)
    cache = ResultCache()
    cache.put(RuleResult(rule.name, rule.family, rule.digest, "proved", "all-shapes",
                         message="4 proof instance(s)", numeric="ok"))  # fmt: skip
    cache.save()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """(report.html, report.json, folder) of one run: HTML and JSON reports of the same
    model and options."""
    folder = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        _hermetic_proofs(folder / "cache", mp)
        import optimizer.api

        mp.setattr(optimizer.api, "measure_speedup", lambda *a, **k: 2.0)  # as conftest does
        src = folder / "lossy.onnx"
        onnx.save(lossy_model(), src)
        common = ("--atol", "1e-3", "--time-limit", "5")
        result = invoke("optimize", src, "-o", folder / "o.onnx", "--report",
                        folder / "report.html", *common)  # fmt: skip
        assert result.exit_code == 0, result.output
        result = invoke("optimize", src, "-o", folder / "o2.onnx", "--report",
                        folder / "report.json", *common)  # fmt: skip
        assert result.exit_code == 0, result.output
    return folder / "report.html", json.loads((folder / "report.json").read_text()), folder


class _Collect(html.parser.HTMLParser):
    """Tags, ids, and the text of the page (a well-formedness check on the way)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            self.attrs.append((tag, k, v))
            if k == "id":
                self.ids.append(v)

    def handle_data(self, data):
        self.text.append(data)


def _parse(text: str) -> _Collect:
    parser = _Collect()
    parser.feed(text)
    parser.close()
    return parser


def test_html_lists_every_rewrite_its_proof_and_the_drift(page):
    path, data, _ = page
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    steps = data["search"]["steps"]
    assert steps, "the model must get rewrites"
    parsed = _parse(text)
    # Each rewrite: a table row and a details section, in trace order, naming its rule.
    rows = re.findall(r'<tr[^>]*id="row-(\d+)".*?<code class="rule-name">([^<]+)</code>', text)
    assert [(int(k), r) for k, r in rows] == [(k + 1, s["rule"]) for k, s in enumerate(steps)]
    for k in range(len(steps)):
        assert f"rewrite-{k + 1}" in parsed.ids
    # Each applied rule: its source text, file:line, and proof.
    for rule in {s["rule"] for s in steps}:
        assert f"rule-{rule}" in parsed.ids
    from optimizer.passes.rewrite import default_rules

    lossy = next(r for r in default_rules().rules if r.name == LOSSY_RULE)
    assert html.escape(lossy.source) in text
    assert f"rules/{Path(lossy.path).name}:{lossy.line}" in text
    assert "z3 proof for all shapes" in text  # the cached verdict of relu-relu
    assert f"graphopt rules verify {LOSSY_RULE}" in text  # the others: not re-proved here
    # The drift bisection names the lossy rule.
    summary = text[text.index('id="drift-summary"') :]
    summary = summary[: summary.index("</div>")]
    assert f'<code class="blamed-rule">{LOSSY_RULE}</code>' in summary
    assert "<svg" in text and len(parsed.ids) == len(set(parsed.ids))


def test_html_is_self_contained(page):
    text = page[0].read_text(encoding="utf-8")
    parsed = _parse(text)
    assert "link" not in parsed.tags and "img" not in parsed.tags and "iframe" not in parsed.tags
    assert not [a for a in parsed.attrs if a[1] == "src"]
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", text))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls


def test_json_report_is_unchanged(page):
    _, data, _ = page
    assert {"before", "after", "search", "guard", "checked"} <= set(data)
    assert data["search"]["algorithm"] == "ocggs>eqsat"


@pytest.mark.parametrize(
    "report, message",
    [("run.txt", "only .json reports and .html reports"), ("no/such/dir/r.html", "no such folder")],
)
def test_bad_report_path_is_one_error_line_and_writes_nothing(tmp_path, report, message):
    src = tmp_path / "lossy.onnx"
    onnx.save(lossy_model(), src)
    result = invoke("optimize", src, "-o", tmp_path / "o.onnx", "--report", tmp_path / report)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphopt: error: ") and message in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lossy.onnx"]


def test_failed_check_writes_no_report(tmp_path, monkeypatch):
    _hermetic_proofs(tmp_path / "cache", monkeypatch)
    src = tmp_path / "lossy.onnx"
    onnx.save(lossy_model(), src)
    # The lossy rewrite's drift (~2.4e-4) exceeds a tight tolerance: nothing is written.
    result = invoke("optimize", src, "-o", tmp_path / "o.onnx", "--report", tmp_path / "r.html",
                    "--atol", "1e-6", "--rtol", "1e-6")  # fmt: skip
    assert result.exit_code == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "lossy.onnx"]


@pytest.mark.skipif(
    CHROMIUM is None, reason="needs a headless browser: Debian's chromium package "
    "(apt-get install chromium); CI installs it",
)  # fmt: skip
def test_report_opens_in_headless_chromium_without_errors(page, tmp_path):
    path, data, _ = page
    profile = tmp_path / "profile"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
        "--dump-dom", path.resolve().as_uri(),
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    # The page's closing script ran, and its error handler recorded nothing.
    status = re.search(r'<span id="script-status"([^>]*)>([^<]*)</span>', dom)
    assert status is not None and status.group(2) == "script ran", dom[-500:]
    steps = data["search"]["steps"]
    assert f'data-rewrites="{len(steps)}"' in status.group(1)
    errors = re.search(r'<ul id="page-errors">(.*?)</ul>', dom, re.S)
    assert errors is not None and errors.group(1).strip() == "", errors
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == [], console
    # Every rewrite's rule is listed in the rendered page.
    rendered = _parse(dom)
    listed = re.findall(r'<code class="rule-name">([^<]+)</code>', dom)
    assert listed == [s["rule"] for s in steps]
    assert {s["rule"] for s in steps} <= set("".join(rendered.text).split()) | set(listed)
    assert f'<code class="blamed-rule">{LOSSY_RULE}</code>' in dom
