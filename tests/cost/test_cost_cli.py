"""``graphopt cost``: the per-op table, --json, the cache folder, and bad input (exit 2)."""

from __future__ import annotations

import json
import os

import onnx
import pytest
import typer
from cost_helpers import onnx_cnn_model
from typer.testing import CliRunner

from optimizer.cli_cost import cost, format_cost
from optimizer.cost.cache import TIMINGS_FILE
from optimizer.runtime import available_devices

app = typer.Typer()
app.command("cost")(cost)


@app.callback()
def _group() -> None:
    """Keep `cost` a subcommand, as on graphopt's own app."""


runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, ["cost", *map(os.fspath, args)], catch_exceptions=False)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    onnx.save(onnx_cnn_model(), path)
    return path


def one_line_error(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphopt: error: "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return lines[0]


def test_analytic_table_lists_op_types_nodes_and_total(cnn):
    result = invoke(cnn)
    assert result.exit_code == 0, result.stderr
    for text in ("Conv", "Relu", "GlobalAveragePool", "total", "flop-equivalents", "conv2"):
        assert text in result.stdout
    assert "symbolic dimensions bound: batch=1" in result.stdout


def test_json_shares_sum_to_one_and_counts_match(cnn):
    result = invoke(cnn, "--json", "--top", "3")
    data = json.loads(result.stdout)
    assert data["cost_model"] == "analytic" and data["units"] == "flop-equivalents"
    assert {e["op"]: e["count"] for e in data["ops"]} == {
        "Conv": 2, "Relu": 1, "Add": 1, "GlobalAveragePool": 1, "Flatten": 1
    }  # fmt: skip
    assert sum(e["share"] for e in data["ops"]) == pytest.approx(1.0)
    assert sum(e["estimate"] for e in data["ops"]) == pytest.approx(data["total"])
    assert len(data["top_nodes"]) == 3
    estimates = [e["estimate"] for e in data["top_nodes"]]
    assert estimates == sorted(estimates, reverse=True)
    assert data["top_nodes"][0]["op"] == "Conv"


def test_measured_model_times_into_the_cache_folder_and_reuses_it(cnn, tmp_path):
    args = (cnn, "--model", "measured", "--cache", tmp_path, "--threads", "1", "--json")
    first = json.loads(invoke(*args).stdout)
    assert first["units"] == "seconds" and first["total"] > 0
    # Every node is timed or fused into the Conv before it (the Relu after conv1, by
    # onnxruntime's decision on this machine).
    assert first["timing"]["timed"] + first["timing"]["fused"] == 6
    assert first["timing"]["fused"] >= 1
    assert first["timing"]["cached"] == 0
    assert first["timing"]["cache_file"] == str(tmp_path / TIMINGS_FILE)
    assert (tmp_path / TIMINGS_FILE).is_file()
    assert first["symbols"] == {"batch": 1}
    second = json.loads(invoke(*args).stdout)
    assert second["timing"]["timed"] == 0
    assert second["timing"]["cached"] == first["timing"]["timed"]
    assert second["timing"]["fused"] == first["timing"]["fused"]
    assert second["total"] == pytest.approx(first["total"])
    bound = json.loads(invoke(*args, "--dim", "batch=2").stdout)
    assert bound["symbols"] == {"batch": 2}
    assert bound["timing"]["timed"] == first["timing"]["timed"]


def test_measured_table_says_where_estimates_came_from(cnn, tmp_path):
    result = invoke(cnn, "--model", "measured", "--cache", tmp_path, "--threads", "1")
    assert result.exit_code == 0, result.stderr
    assert "timed" in result.stdout and "seconds" in result.stdout
    assert "ops timed: " in result.stdout and "fused into their producer: " in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("missing.onnx",), "missing.onnx"),
        (("{cnn}", "--model", "guess"), "unknown cost model 'guess'"),
        (("{cnn}", "--dim", "batch=2"), "--dim applies to --model measured"),
        (("{cnn}", "--model", "measured", "--dim", "batch"), "bad --dim 'batch'"),
        (("{cnn}", "--device", "tpu"), "unknown device 'tpu'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cnn, tmp_path, args, message):
    args = [a.replace("{cnn}", str(cnn)) for a in args]
    line = one_line_error(invoke(*args, "--cache", tmp_path))
    assert message in line
    assert not (tmp_path / TIMINGS_FILE).exists()


def test_not_an_onnx_file_is_bad_input(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00\x01 not a protobuf")
    one_line_error(invoke(bad))


@pytest.mark.skipif("cuda" in available_devices(), reason="this machine has CUDA")
def test_cuda_without_the_provider_is_bad_input(cnn):
    assert "CUDAExecutionProvider" in one_line_error(invoke(cnn, "--device", "cuda"))


def test_format_cost():
    assert format_cost(0.0123, "seconds") == "12.3 ms"
    assert format_cost(4.5e-6, "seconds") == "4.5 us"
    assert format_cost(2.5e9, "flop-equivalents") == "2.5 G"
