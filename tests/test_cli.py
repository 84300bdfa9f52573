"""The ``graphopt`` command line: optimize, info, check, example and their error handling.

Most tests drive ``optimizer.cli.app`` in process with typer's CliRunner (stdout and stderr
captured apart); two run the installed ``graphopt`` script end to end. The contract under
test (README.md, optimizer/cli.py): bad input is one line ``graphopt: error: ...`` on stderr
and exit status 2, a failed numeric check exits 1, and neither writes or changes any file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import optimizer.api
from optimizer.cli import app
from optimizer.examples import example_model
from optimizer.ir import Node, transform

runner = CliRunner()


def invoke(*args: str | os.PathLike):
    """Run ``graphopt ARGS`` in process; exceptions other than exit propagate."""
    return runner.invoke(app, [os.fspath(a) for a in args], catch_exceptions=False)


def assert_one_line_error(result, code: int = 2) -> str:
    """Exit ``code``, exactly one stderr line ``graphopt: error: ...``, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {lines!r}"
    assert lines[0].startswith("graphopt: error: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def listing(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` (hidden ones too) with its bytes (None for folders)."""
    return {
        str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture
def example(tmp_path: Path) -> Path:
    path = tmp_path / "example.onnx"
    result = invoke("example", "-o", path)
    assert result.exit_code == 0, result.output
    assert f"wrote {path}" in result.stdout
    return path


def _run_example(path: Path, batch: int = 2) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = np.random.default_rng(0).standard_normal((batch, 3, 32, 32)).astype(np.float32)
    (logits,) = session.run(None, {"image": image})
    return logits


# ------------------------------------------------------------------------------------------
# example / optimize: the happy paths
# ------------------------------------------------------------------------------------------


def test_example_writes_a_valid_model(example):
    model = onnx.load(example)
    onnx.checker.check_model(model, full_check=True)
    assert onnx.load(example).SerializeToString() == example_model().SerializeToString()


def test_optimize_writes_default_output_name(example):
    before = example.read_bytes()
    result = invoke("optimize", example)
    assert result.exit_code == 0, result.output
    out = example.with_name("example.opt.onnx")
    assert out.is_file()
    assert example.read_bytes() == before, "the input was modified"
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert "Identity" not in ops and "Dropout" not in ops
    assert len(ops) < len(example_model().graph.node)
    np.testing.assert_allclose(_run_example(out), _run_example(example), rtol=1e-4, atol=1e-5)
    assert str(out) in result.stdout.replace("\n", "")  # the table title may wrap
    assert "outputs match" in result.stdout
    assert result.stderr == ""
    # no staging folder left behind
    assert sorted(p.name for p in example.parent.iterdir()) == ["example.onnx", "example.opt.onnx"]


def test_default_output_name_without_onnx_suffix(tmp_path, example):
    src = tmp_path / "model.bin"
    shutil.copy(example, src)
    assert invoke("optimize", src).exit_code == 0
    assert (tmp_path / "model.bin.opt.onnx").is_file()


def test_optimize_output_option(example, tmp_path):
    out = tmp_path / "sub" / "custom.onnx"
    out.parent.mkdir()
    result = invoke("optimize", example, "-o", out)
    assert result.exit_code == 0, result.output
    assert out.is_file()
    assert not example.with_name("example.opt.onnx").exists()
    onnx.checker.check_model(onnx.load(out))
    assert sorted(p.name for p in out.parent.iterdir()) == ["custom.onnx"]


def test_optimize_json_summary(example, tmp_path):
    out = tmp_path / "o.onnx"
    result = invoke("optimize", example, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) >= {
        "before", "after", "passes", "seconds", "checked", "max_abs_error",
        "size_before", "size_after", "output",
    }  # fmt: skip
    assert data["checked"] is True
    assert isinstance(data["max_abs_error"], float) and data["max_abs_error"] <= 1e-4
    assert data["output"] == str(out)
    assert data["size_before"] == example.stat().st_size
    assert data["size_after"] == out.stat().st_size
    for side in ("before", "after"):
        stats = data[side]
        assert {
            "nodes",
            "op_histogram",
            "parameters",
            "flops",
            "inputs",
            "outputs",
            "opsets",
        } <= set(stats)
        assert stats["nodes"] == sum(stats["op_histogram"].values())
        assert stats["inputs"] == [{"name": "image", "type": "float[N,3,32,32]"}]
    assert data["before"]["nodes"] > data["after"]["nodes"]
    assert data["after"]["nodes"] == len(onnx.load(out).graph.node)
    assert data["before"]["op_histogram"].get("Identity") == 1
    assert "Identity" not in data["after"]["op_histogram"]
    assert data["passes"] and all(
        {"name", "nodes_before", "nodes_after", "seconds"} <= set(p) for p in data["passes"]
    )


def test_optimize_no_check(example, tmp_path):
    out = tmp_path / "o.onnx"
    result = invoke("optimize", example, "-o", out, "--no-check", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["checked"] is False and data["max_abs_error"] is None
    np.testing.assert_allclose(_run_example(out), _run_example(example), rtol=1e-4, atol=1e-5)
    result = invoke("optimize", example, "-o", out, "--no-check")
    assert result.exit_code == 0 and "not checked" in result.stdout


def test_optimize_in_place(example):
    before = example.read_bytes()
    result = invoke("optimize", example, "--in-place")
    assert result.exit_code == 0, result.output
    assert example.read_bytes() != before
    assert not example.with_name("example.opt.onnx").exists()
    assert sorted(p.name for p in example.parent.iterdir()) == ["example.onnx"]
    model = onnx.load(example)
    onnx.checker.check_model(model)
    assert "Identity" not in [n.op_type for n in model.graph.node]


def test_in_place_excludes_output(example, tmp_path):
    before = listing(tmp_path)
    assert_one_line_error(invoke("optimize", example, "--in-place", "-o", tmp_path / "x.onnx"))
    assert listing(tmp_path) == before


@pytest.mark.parametrize("spelling", ["same", "relative", "dotted"])
def test_refuses_to_overwrite_input_without_in_place(example, spelling, monkeypatch):
    monkeypatch.chdir(example.parent)
    target = {
        "same": example,
        "relative": Path("example.onnx"),
        "dotted": Path(".") / ".." / example.parent.name / "example.onnx",
    }[spelling]
    before = listing(example.parent)
    line = assert_one_line_error(invoke("optimize", example, "-o", target))
    assert "--in-place" in line
    assert listing(example.parent) == before


def test_unknown_pass_is_bad_input(example):
    before = listing(example.parent)
    assert_one_line_error(invoke("optimize", example, "--passes", "eliminate-identity,nope"))
    assert listing(example.parent) == before


def test_input_shape_specialises_the_model(example, tmp_path):
    out = tmp_path / "fixed.onnx"
    result = invoke("optimize", example, "-o", out, "--input-shape", "image:2,3,32,32")
    assert result.exit_code == 0, result.output
    model = onnx.load(out)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 32, 32]
    ops = [n.op_type for n in model.graph.node]
    # the batch-size computation of the Reshape target folds once the batch is known
    assert "Shape" not in ops and "Gather" not in ops
    np.testing.assert_allclose(_run_example(out), _run_example(example), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "spec",
    [
        "x:1,a",  # not an integer
        "image:1,a",
        "image:0,3,32,32",  # not positive
        "image:",
        ":1,2",
        "image",  # no colon
        "nosuch:1,3,32,32",  # unknown input name
        "image:1,3,32",  # wrong rank
        "image:1,3,32,32,1",
        "image:1,3,16,16",  # contradicts a static dim
    ],
)
def test_bad_input_shape(example, spec):
    before = listing(example.parent)
    assert_one_line_error(invoke("optimize", example, "--input-shape", spec))
    assert listing(example.parent) == before


def test_input_shape_given_twice(example):
    before = listing(example.parent)
    result = invoke(
        "optimize", example, "--input-shape", "image:1,3,32,32", "--input-shape", "image:2,3,32,32"
    )
    assert_one_line_error(result)
    assert listing(example.parent) == before


# ------------------------------------------------------------------------------------------
# info / check
# ------------------------------------------------------------------------------------------


def test_info_text(example):
    result = invoke("info", example)
    assert result.exit_code == 0, result.output
    assert "opsets: ai.onnx 17" in result.stdout
    assert "input  image: float[N,3,32,32]" in result.stdout
    assert "output logits: float[N,10]" in result.stdout
    assert "b'image'" not in result.stdout
    assert "Conv" in result.stdout and "parameters:" in result.stdout and "FLOPs" in result.stdout


def test_info_json(example):
    result = invoke("info", example, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"opsets", "inputs", "outputs", "op_histogram", "parameters", "flops"} <= set(data)
    assert data["opsets"] == {"ai.onnx": 17}
    assert data["inputs"] == [{"name": "image", "type": "float[N,3,32,32]"}]
    assert data["outputs"] == [{"name": "logits", "type": "float[N,10]"}]
    source = example_model()
    assert data["parameters"] == sum(int(np.prod(t.dims)) for t in source.graph.initializer)
    assert isinstance(data["flops"], int) and data["flops"] > 0
    assert data["file_size"] == example.stat().st_size


def test_info_describes_the_file_as_stored(example, tmp_path):
    """``info`` counts the nodes in the file, as ``optimize``'s "before" column does.

    The example holds a duplicated Relu and a dead Sigmoid; the importer merges and drops
    them, but they are in the file, and ``optimize --json`` reports them under "before".
    """
    info = json.loads(invoke("info", example, "--json").stdout)
    report = invoke("optimize", example, "-o", tmp_path / "o.onnx", "--json")
    before = json.loads(report.stdout)["before"]
    stored: dict[str, int] = {}
    for node in example_model().graph.node:
        stored[node.op_type] = stored.get(node.op_type, 0) + 1
    assert before["op_histogram"] == stored
    assert info["op_histogram"] == before["op_histogram"]
    assert info["nodes"] == before["nodes"] == len(example_model().graph.node)


def test_check_equal_models(example, tmp_path):
    out = tmp_path / "o.onnx"
    assert invoke("optimize", example, "-o", out).exit_code == 0
    result = invoke("check", example, out)
    assert result.exit_code == 0, result.output
    assert "equivalent" in result.stdout
    result = invoke("check", example, out, "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["ok"] is True and [o["name"] for o in data["outputs"]] == ["logits"]


def test_check_different_models(example, tmp_path):
    other = tmp_path / "other.onnx"
    onnx.save(example_model(seed=1), other)
    result = invoke("check", example, other)
    assert result.exit_code == 1, result.output
    assert "different" in result.stdout and "logits" in result.stdout
    result = invoke("check", example, other, "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["outputs"][0]["ok"] is False
    assert data["outputs"][0]["max_abs_err"] > 0


# ------------------------------------------------------------------------------------------
# bad input files
# ------------------------------------------------------------------------------------------


def _small_model(nodes, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _make_bad(kind: str, folder: Path) -> Path:
    """Create the bad input ``kind`` inside ``folder`` and return its path."""
    path = folder / "bad.onnx"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not an ONNX model\njust some text\n")
    elif kind == "truncated":
        data = example_model().SerializeToString()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated-header":
        path.write_bytes(example_model().SerializeToString()[:7])
    elif kind == "unknown-op":
        onnx.save(_small_model([helper.make_node("NoSuchOp", ["x"], ["y"])]), path)
    elif kind == "external-outside":
        weight = numpy_helper.from_array(np.ones(4, np.float32), "w")
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "../outside.bin"), ("offset", "0"), ("length", "16")):
            entry = weight.external_data.add()
            entry.key, entry.value = key, value
        (folder.parent / "outside.bin").write_bytes(np.ones(4, np.float32).tobytes())
        model = _small_model([helper.make_node("Add", ["x", "w"], ["y"])], [weight])
        path.write_bytes(model.SerializeToString())
    else:  # pragma: no cover
        raise AssertionError(kind)
    return path


BAD_KINDS = [
    "missing",
    "directory",
    "empty",
    "text",
    "truncated",
    "truncated-header",
    "unknown-op",
    "external-outside",
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_optimize_bad_input_default_output(kind, workdir):
    bad = _make_bad(kind, workdir)
    before = listing(workdir.parent)
    line = assert_one_line_error(invoke("optimize", bad))
    assert result_is_quiet(line)
    assert not (workdir / "bad.opt.onnx").exists()
    assert listing(workdir.parent) == before


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_optimize_bad_input_keeps_existing_output(kind, workdir):
    bad = _make_bad(kind, workdir)
    out = workdir / "out.onnx"
    out.write_bytes(b"precious bytes that must survive")
    before = listing(workdir.parent)
    for extra in ([], ["--no-check"], ["--json"]):
        result = invoke("optimize", bad, "-o", out, *extra)
        assert_one_line_error(result)
        assert result.stdout == ""
        assert listing(workdir.parent) == before


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_info_bad_input(kind, workdir):
    bad = _make_bad(kind, workdir)
    assert_one_line_error(invoke("info", bad))
    assert_one_line_error(invoke("info", bad, "--json"))


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_check_bad_reference(kind, workdir, example):
    bad = _make_bad(kind, workdir)
    assert_one_line_error(invoke("check", bad, example))


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_check_bad_candidate(kind, workdir, example):
    """A candidate that is no usable ONNX file is bad input (exit 2), not a difference (1)."""
    bad = _make_bad(kind, workdir)
    line = assert_one_line_error(invoke("check", example, bad))
    if kind == "directory":
        assert "no such file" not in line, line


def result_is_quiet(line: str) -> bool:
    """An error line names the problem, not Python internals."""
    return "internal error" not in line and "GRAPHOPT_DEBUG" not in line


@pytest.mark.parametrize(
    ("kind", "needle"),
    [
        ("missing", "no such file"),
        ("directory", "folder"),
        ("empty", "empty"),
        ("truncated", "truncated"),
        ("unknown-op", "NoSuchOp"),
        ("external-outside", "outside.bin"),
    ],
)
def test_error_messages_name_the_problem(kind, needle, workdir):
    line = assert_one_line_error(invoke("optimize", _make_bad(kind, workdir)))
    assert needle in line


# ------------------------------------------------------------------------------------------
# a failing numeric check writes nothing
# ------------------------------------------------------------------------------------------


@pytest.fixture
def add_becomes_sub(monkeypatch):
    """Make the optimizer wrong: every Add in the optimized graph computes Sub."""
    original = optimizer.api._optimize_graph

    def broken(graph, options):
        run = original(graph, options)

        def rewrite(node, inputs):
            if node.op == "Add" and node.domain == "":
                types = [v.type for v in node.outputs]
                return Node.make("Sub", inputs, node.attrs, output_types=types).outputs
            return None

        # Both of the pipeline's results are wrong, whichever the guard keeps.
        run.cleaned = transform(run.cleaned, rewrite, provenance="sabotage")
        run.rewritten = transform(run.rewritten, rewrite, provenance="sabotage")
        return run

    monkeypatch.setattr(optimizer.api, "_optimize_graph", broken)


def test_failed_check_writes_nothing(example, add_becomes_sub):
    before = listing(example.parent)
    line = assert_one_line_error(invoke("optimize", example), code=1)
    assert "numeric check failed" in line and "logits" in line
    assert listing(example.parent) == before


def test_failed_check_keeps_existing_output_and_input(example, tmp_path, add_becomes_sub):
    out = tmp_path / "out.onnx"
    out.write_bytes(b"old result")
    before = listing(tmp_path)
    assert_one_line_error(invoke("optimize", example, "-o", out), code=1)
    assert_one_line_error(invoke("optimize", example, "-o", out, "--json"), code=1)
    assert_one_line_error(invoke("optimize", example, "--in-place"), code=1)
    assert listing(tmp_path) == before


def test_no_check_writes_the_wrong_model(example, tmp_path, add_becomes_sub):
    """The sabotage is real: without the check, the wrong model is written."""
    out = tmp_path / "wrong.onnx"
    assert invoke("optimize", example, "-o", out, "--no-check").exit_code == 0
    ops = [n.op_type for n in onnx.load(out).graph.node]
    assert "Add" not in ops and "Sub" in ops
    assert invoke("check", example, out).exit_code == 1


# ------------------------------------------------------------------------------------------
# the installed script, end to end
# ------------------------------------------------------------------------------------------


def _graphopt() -> list[str]:
    script = shutil.which("graphopt")
    if script is None:
        script = str(Path(sys.executable).with_name("graphopt"))
    assert Path(script).exists(), "the graphopt console script is not installed"
    return [script]


def test_script_end_to_end(tmp_path):
    env = {**os.environ, "COLUMNS": "200"}
    env.pop("GRAPHOPT_DEBUG", None)
    run = lambda *a: subprocess.run(  # noqa: E731
        [*_graphopt(), *a], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env
    )
    made = run("example", "-o", "m.onnx")
    assert made.returncode == 0, made.stderr
    done = run("optimize", "m.onnx", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == "m.opt.onnx"
    assert (tmp_path / "m.opt.onnx").is_file()
    same = run("check", "m.onnx", "m.opt.onnx")
    assert same.returncode == 0, same.stdout + same.stderr


def test_script_bad_input_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "GRAPHOPT_DEBUG"}
    (tmp_path / "t.onnx").write_bytes(example_model().SerializeToString()[:1000])
    proc = subprocess.run(
        [*_graphopt(), "optimize", "t.onnx"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("graphopt: error: t.onnx:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.onnx"]


@pytest.mark.parametrize("search", ["greedy", "taso", "ocggs", "ocggs-sample", "eqsat", "auto"])
def test_optimize_search_writes_a_report_with_the_trace(example, tmp_path, search):
    report = tmp_path / "run.json"
    result = invoke("optimize", example, "-o", tmp_path / "o.onnx", "--search", search,
                    "--time-limit", "5", "--report", report)  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    trace = data["search"]
    assert trace["algorithm"] == ("ocggs>eqsat" if search == "auto" else search)
    assert trace["cost_after"] <= trace["cost_before"]
    assert all({"rule", "nodes_matched", "cost_before", "cost_after"} <= set(s) for s in
               trace["steps"])  # fmt: skip
    assert data["guard"]["kept"] in ("rewritten", "cleaned")
    assert invoke("check", example, tmp_path / "o.onnx").exit_code == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--search", "magic"], "unknown search algorithm 'magic'"),
        (["--cost-model", "psychic"], "unknown cost model 'psychic'"),
        (["--report", "run.txt"], "only .json reports"),
    ],
)
def test_optimize_refuses_bad_search_options(example, tmp_path, args, message):
    line = assert_one_line_error(invoke("optimize", example, "-o", tmp_path / "o.onnx", *args))
    assert message in line
    assert not (tmp_path / "o.onnx").exists()
