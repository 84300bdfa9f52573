"""``graphopt bench``: the quick suite end to end (the CI smoke test), failure handling, reports.

The smoke test runs the whole ``quick`` suite with the peers and checks the JSON document's
shape and that graphopt's optimized model matched the original on every model. Speedups are
not asserted: they are wall-clock measurements (benchmarks/RESULTS.md reports them).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("torch", reason="graphopt bench builds its models in torch (torch extra)")
pytest.importorskip("onnxscript", reason="the zoo's dynamo export needs onnxscript (torch extra)")

from benchmarks import models  # noqa: E402
from optimizer.bench import report, runner  # noqa: E402
from optimizer.cli import app  # noqa: E402

RESULT_KEYS = {
    "status", "error", "optimize_seconds", "nodes", "cost", "outputs_match", "max_abs_error",
    "latency_ms", "speedup", "speedup_q1", "speedup_q3", "compile_seconds",
}  # fmt: skip


def _invoke(*args: str):
    return CliRunner().invoke(app, ["bench", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-quick")
    # A 2 s search per model keeps the smoke test short; the search itself is tested elsewhere.
    result = _invoke(
        "--suite", "quick", "--peers", "--rounds", "3", "--time-limit", "2", "--out", str(out)
    )  # fmt: skip
    return result, out


def test_quick_suite_runs_and_graphopt_matches_everywhere(quick_run):
    result, out = quick_run
    assert result.exit_code == 0, result.output
    document = json.loads((out / "results.json").read_text())
    assert document["schema"] == runner.SCHEMA
    assert document["suite"] == "quick"
    assert [m["name"] for m in document["models"]] == models.SUITES["quick"]
    assert document["config"]["threads"] >= 1 and document["config"]["rounds"] == 3
    assert document["config"]["time_limit"] == 2.0
    assert document["machine"]["cpu"] and document["machine"]["versions"]["onnxruntime"]
    for entry in document["models"]:
        assert entry["status"] == "ok", entry
        systems = entry["systems"]
        assert {runner.ORIGINAL, runner.GRAPHOPT, runner.CONTROL} <= set(systems)
        for name, res in systems.items():
            assert set(res) >= RESULT_KEYS, (entry["name"], name)
        original, graphopt = systems[runner.ORIGINAL], systems[runner.GRAPHOPT]
        assert graphopt["status"] == "ok" and graphopt["outputs_match"] is True, entry["name"]
        assert graphopt["max_abs_error"] is not None
        assert graphopt["optimize_seconds"] > 0
        assert graphopt["nodes"] > 0 and original["nodes"] > 0
        assert graphopt["cost"] <= original["cost"] * (1 + 1e-9)
        for res in (original, graphopt, systems[runner.CONTROL]):
            assert res["latency_ms"] > 0 and math.isfinite(res["speedup"])
            assert res["speedup_q1"] <= res["speedup"] <= res["speedup_q3"]
        assert original["speedup"] == pytest.approx(1.0)
    assert document["summary"]["graphopt_outputs_match"] is True
    assert document["summary"]["geomean_speedup"]["graphopt"] > 0


def test_quick_suite_records_every_peer(quick_run):
    _, out = quick_run
    document = json.loads((out / "results.json").read_text())
    allowed = {"ok", "failed", "crashed", "timeout", "unavailable", "skipped"}
    for entry in document["models"]:
        systems = entry["systems"]
        for peer in ("onnxsim", "onnxoptimizer", "onnxscript", "ort-transformers"):
            assert systems[peer]["status"] in allowed, (entry["name"], peer)
            if systems[peer]["status"] == "ok":
                assert systems[peer]["outputs_match"] in (True, False)
                assert systems[peer]["speedup"] > 0
            else:
                assert systems[peer]["error"]
        transformer = models.get(entry["name"]).transformer
        assert (systems["ort-transformers"]["status"] == "skipped") == (transformer is None)


def test_quick_suite_writes_markdown_and_chart(quick_run):
    _, out = quick_run
    markdown = (out / "results.md").read_text()
    for name in models.SUITES["quick"]:
        assert f"| {name} |" in markdown
    assert "geometric mean" in markdown and "A/A control" in markdown
    png = (out / "speedup.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000


def test_one_failing_model_is_recorded_and_the_suite_goes_on(tmp_path, monkeypatch):
    real_export = models.export

    def export(name, batch=1, *args, **kwargs):
        if name == "nasrnn_tiny":
            raise RuntimeError("simulated exporter crash")
        return real_export(name, batch, *args, **kwargs)

    monkeypatch.setattr(models, "export", export)
    result = _invoke(
        "--suite", "quick", "--models", "nasrnn_tiny,resnet_tiny", "--rounds", "1",
        "--out", str(tmp_path),
    )  # fmt: skip
    # A model without a checked optimized model fails the run (exit 1), after all models ran.
    assert result.exit_code == 1
    document = json.loads((tmp_path / "results.json").read_text())
    failed, ok = document["models"]
    assert failed["status"] == "error" and "simulated exporter crash" in failed["error"]
    assert ok["status"] == "ok" and ok["systems"]["graphopt"]["outputs_match"] is True
    assert document["summary"]["models_failed"] == ["nasrnn_tiny"]
    assert "nasrnn_tiny" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--suite", "nope"], "unknown suite 'nope'"),
        (["--models", "resnet50x"], "unknown model 'resnet50x'"),
        (["--search", "magic"], "unknown search algorithm 'magic'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(tmp_path, args, message):
    result = _invoke(*args, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.output
    assert not (tmp_path / "out" / "results.json").exists()


def _document(systems_per_model: dict[str, dict]) -> dict:
    entries = [
        {"name": name, "status": "ok", "systems": systems}
        for name, systems in systems_per_model.items()
    ]
    return {"suite": "t", "models": entries, "summary": runner.summarize(entries)}


def _sys(speedup, *, status="ok", match=True):
    return {"status": status, "speedup": speedup, "speedup_q1": speedup, "speedup_q3": speedup,
            "outputs_match": match if status == "ok" else None, "latency_ms": 1.0,
            "error": None if status == "ok" else "boom"}  # fmt: skip


def test_summary_leaves_out_wrong_and_failed_results():
    document = _document({
        "m1": {"original": _sys(1.0), "graphopt": _sys(1.2), "onnxsim": _sys(2.0, match=False)},
        "m2": {"original": _sys(1.0), "graphopt": _sys(1.2 ** 3), "onnxsim": _sys(1.1)},
        "m3": {"original": _sys(1.0), "graphopt": _sys(1.0), "onnxsim": _sys(0, status="crashed")},
    })  # fmt: skip
    summary = document["summary"]
    assert summary["geomean_speedup"]["graphopt"] == pytest.approx(1.2 ** (4 / 3))
    assert summary["geomean_speedup"]["onnxsim"] == pytest.approx(1.1)
    assert summary["models_counted"]["onnxsim"] == 1
    assert summary["models_attempted"]["onnxsim"] == 3
    table = report.markdown_table(document)
    assert "✗ outputs differ" in table and "crashed" in table
    assert "(1/3)" in table


def test_chart_has_a_bar_per_produced_result(tmp_path):
    pytest.importorskip("matplotlib", reason="the chart needs the bench extra (matplotlib)")
    document = _document({
        "m1": {"original": _sys(1.0), "graphopt": _sys(1.1)},
        "m2": {"original": _sys(1.0), "graphopt": _sys(0.9)},
    })  # fmt: skip
    path = report.write_chart(document, tmp_path / "c.png")
    assert path is not None and path.read_bytes().startswith(b"\x89PNG")


def test_machine_description_names_cpu_and_versions():
    from optimizer.bench import machine

    described = machine.describe_machine(("onnxsim",))
    assert described["usable_cpus"] >= 1 and described["logical_cpus"] >= 1
    assert described["versions"]["onnx"] and "onnxsim" in described["versions"]
    line = machine.machine_line(described)
    assert described["cpu"] in line and "onnxruntime" in line


@pytest.mark.slow
def test_torch_rows_time_eager_and_inductor(tmp_path):
    """--torch on one tiny model: eager and inductor latency and inductor's compile time."""
    result = _invoke(
        "--suite", "quick", "--models", "resnet_tiny", "--torch", "--rounds", "2",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads((tmp_path / "results.json").read_text())
    systems = document["models"][0]["systems"]
    assert systems["torch-eager"]["status"] == "ok" and systems["torch-eager"]["latency_ms"] > 0
    inductor = systems["torch-inductor"]
    assert inductor["status"] == "ok", inductor
    assert inductor["compile_seconds"] > 0 and inductor["latency_ms"] > 0
    assert "torch-inductor ms" in (tmp_path / "results.md").read_text()


def test_results_markdown_of_a_document_without_runs_is_still_valid():
    text = report.markdown_report({"suite": "x", "models": [], "summary": runner.summarize([])})
    assert "## Suite `x`" in text and "geometric mean" in text


def test_package_ships_the_zoo():
    # graphopt bench imports the zoo from the installed package, not from a checkout.
    import benchmarks.models as zoo

    assert Path(zoo.__file__).name == "__init__.py" and zoo.SUITES["quick"]


def test_fresh_compile_columns_are_reported(tmp_path, monkeypatch):
    """--fresh-compiles adds each compiler's cold and warm compile seconds (measured in fresh
    processes by optimizer.torch_backend.bench, replaced here by a stub: the real children
    take minutes) to the JSON and the torch table."""
    from optimizer.bench import report
    from optimizer.bench.runner import BenchConfig, SystemResult, _fresh_compile_times
    from optimizer.torch_backend import bench as torch_bench

    def fake(name, **kwargs):
        return {
            "inductor": {"cold": {"compile_seconds": 20.0}, "warm": {"compile_seconds": 4.0}},
            "graphopt": {"cold": {"compile_seconds": 9.0, "phases": {"export": 5.0}},
                         "warm": {"error": "child exited 1"}},
        }  # fmt: skip

    monkeypatch.setattr(torch_bench, "fresh_process_compile_times", fake)
    systems = {"torch-inductor": SystemResult(), "torch-graphopt": SystemResult()}
    _fresh_compile_times("resnet_tiny", BenchConfig(torch=True, fresh_compiles=True), "cpu",
                         systems)  # fmt: skip
    inductor, ours = (systems[s].to_json() for s in ("torch-inductor", "torch-graphopt"))
    assert inductor["compile_cold_seconds"] == 20.0 and inductor["compile_warm_seconds"] == 4.0
    assert ours["compile_cold_phases"] == {"export": 5.0}
    assert ours["compile_warm_error"] == "child exited 1" and "compile_warm_seconds" not in ours
    document = {"models": [{"name": "m", "status": "ok", "systems": {
        "original": {"latency_ms": 1.0}, "graphopt": {"latency_ms": 1.0},
        "torch-inductor": inductor, "torch-graphopt": ours}}]}  # fmt: skip
    table = report.torch_table(document)
    assert "torch-inductor cold s" in table and "| 20.0 | 4.0 |" in table
