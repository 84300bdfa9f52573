"""``graphopt explain ...`` (the sub-app in optimizer/explain/cli.py, tested on its own until it
is registered on the main CLI): outputs written, bad input as one line and exit 2."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from optimizer.explain.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_cnn(tmp_path_factory):
    """Conv-Relu-GlobalAveragePool-Flatten-Gemm on float[N, 1, 8, 8], 3 classes."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((3, 4)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["features"]),
        helper.make_node("GlobalAveragePool", ["features"], ["pool"]),
        helper.make_node("Flatten", ["pool"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], initializer=inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    folder = tmp_path_factory.mktemp("cli")
    path = folder / "tiny.onnx"
    onnx.save(onnx.shape_inference.infer_shapes(model), path)
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.save(folder / "x.npy", x)
    return path, folder / "x.npy", x


def _error_line(result) -> str:
    text = result.stderr if result.stderr else result.output
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize(
    "method, extra",
    [("integrated-gradients", ["--steps", "16"]), ("saliency", []),
     ("grad-cam", ["--layer", "features"]), ("occlusion", ["--window", "1,4,4"]),
     ("rise", ["--masks", "32"]), ("kernel-shap", ["--grid", "2", "--samples", "32"]),
     ("smoothgrad", ["--samples", "4"]), ("input-x-gradient", [])],
)  # fmt: skip
def test_attribute_writes_attributions_and_heatmaps(tiny_cnn, tmp_path, method, extra):
    model, inputs, x = tiny_cnn
    out, heat = tmp_path / "a.npy", tmp_path / "heat.png"
    result = runner.invoke(
        app,
        ["attribute", str(model), str(inputs), "-m", method, "-t", "1", "-o", str(out),
         "--heatmap", str(heat), "--json", "--no-progress", *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["targets"] == [1, 1]
    attributions = np.load(out)
    assert attributions.shape == ((2, 8, 8) if method == "grad-cam" else x.shape)
    for i in range(2):
        png = tmp_path / f"heat_{i}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if method == "integrated-gradients":
        assert all(abs(g) < 0.05 for g in summary["completeness_gap"])


def test_attribute_reads_an_image_and_defaults_to_the_argmax(tiny_cnn, tmp_path):
    from matplotlib.image import imsave

    model, _, _ = tiny_cnn
    image = np.random.default_rng(1).random((8, 8, 3))
    imsave(tmp_path / "img.png", image)
    result = runner.invoke(
        app, ["attribute", str(model), str(tmp_path / "img.png"), "-m", "saliency", "--json",
              "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["targets"]) == 1


@pytest.mark.parametrize(
    "args, message",
    [(["-m", "lime"], "unknown method 'lime'"),
     (["-m", "grad-cam"], "grad-cam needs --layer"),
     (["-t", "7"], "target out of range"),
     (["-m", "grad-cam", "--layer", "nope"], "no intermediate value named 'nope'"),
     (["--window", "1,x"], None),
     (["-o", "out.txt"], "written as .npy")],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_nothing_written(tiny_cnn, tmp_path, args, message):
    model, inputs, _ = tiny_cnn
    out = tmp_path / "never.npy"
    full = ["attribute", str(model), str(inputs), "--no-progress", *args]
    if "-o" not in args:
        full += ["-o", str(out)]
    if "--window" in args:
        full += ["-m", "occlusion"]
        message = "--window must be comma-separated integers"
    result = runner.invoke(app, full)
    assert result.exit_code == 2, result.output
    line = _error_line(result)
    assert line.startswith("graphopt: error:") and message in line
    assert list(tmp_path.iterdir()) == []


def test_missing_files_are_reported(tmp_path, tiny_cnn):
    model, _, _ = tiny_cnn
    result = runner.invoke(app, ["attribute", str(tmp_path / "m.onnx"), str(tmp_path / "x.npy")])
    assert result.exit_code == 2 and "no such file" in _error_line(result)
    result = runner.invoke(app, ["attribute", str(model), str(tmp_path / "x.npy")])
    assert result.exit_code == 2 and "x.npy: no such file" in _error_line(result)


def test_layers_check_ops_and_vjp(tiny_cnn, tmp_path):
    model, _, x = tiny_cnn
    result = runner.invoke(app, ["layers", str(model), "--json"])
    assert result.exit_code == 0
    layers = {row["name"]: row for row in json.loads(result.stdout)}
    assert layers["features"]["shape"] == "Nx4x8x8"
    result = runner.invoke(app, ["check", str(model)])
    assert result.exit_code == 0 and result.stdout.startswith("ok: d logits / d x")
    result = runner.invoke(app, ["ops"])
    assert result.exit_code == 0 and "Conv" in result.stdout.split()
    out = tmp_path / "grad.onnx"
    result = runner.invoke(app, ["vjp", str(model), "-o", str(out), "--layer", "features"])
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(str(out))
    names = [o.name for o in session.get_outputs()]
    assert names == ["logits", "x.grad", "features.grad", "features"]
    cot = np.zeros((2, 3), dtype=np.float32)
    cot[:, 0] = 1
    values = session.run(None, {"x": x, "logits.cotangent": cot})
    assert values[1].shape == x.shape and values[2].shape == (2, 4, 8, 8)


def test_check_names_the_unsupported_ops(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Cos", ["x"], ["c"]), helper.make_node("Relu", ["c"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]),
              tmp_path / "cos.onnx")  # fmt: skip
    result = runner.invoke(app, ["check", str(tmp_path / "cos.onnx")])
    assert result.exit_code == 2
    assert "no gradient rule for Cos (x1, e.g. 'c')" in _error_line(result)
