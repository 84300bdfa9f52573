"""End-to-end checks on models exported from torch: a small ResNet and a Transformer encoder.

Each model is exported twice with ``torch.onnx.export(..., dynamo=True)`` and a dynamic batch
dimension: as the exporter normally writes it (``optimize=True``, already cleaned up by
onnxscript) and raw (``optimize=False``: Identity nodes, Constant nodes and constant
subexpressions left in, which graphopt must clean up). Exports are cached per session.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra")
pytest.importorskip("onnxscript", reason="needs the torch extra (onnxscript)")

# tests/ is on sys.path (pytest's "prepend" import mode), so the shared builders import as
# a top-level module.
import models  # noqa: E402

import optimizer  # noqa: E402
from optimizer import onnx_io  # noqa: E402
from optimizer.passes import PASSES, run_passes  # noqa: E402

pytestmark = pytest.mark.torch

RTOL, ATOL = 1e-4, 1e-5
NAMES = ("cnn", "transformer")
VARIANTS = [
    pytest.param(name, opt, id=f"{name}-{'exported' if opt else 'raw'}")
    for name in NAMES
    for opt in (True, False)
]


def _op_counts(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


@pytest.fixture(scope="module")
def optimized_files(tmp_path_factory):
    """optimize_file() of every variant, run once: {(name, optimize): (src, dst, report)}."""
    folder = tmp_path_factory.mktemp("optimized")
    done = {}

    def get(name: str, opt: bool):
        key = (name, opt)
        if key not in done:
            src = models.exported(name, opt)
            dst = folder / f"{name}-{int(opt)}.opt.onnx"
            done[key] = (src, dst, optimizer.optimize_file(src, dst))
        return done[key]

    return get


def _inputs(name: str, batch: int, seed: int) -> tuple:
    return models.example_inputs(name, batch=batch, seed=seed)


def _feed(model_inputs: tuple) -> dict[str, np.ndarray]:
    return {"input": model_inputs[0].numpy()}


def test_exports_use_the_dynamo_exporter():
    for name in NAMES:
        for opt in (True, False):
            path = models.exported(name, opt)
            assert models.EXPORTER_USED[str(path)] == "dynamo", (
                f"{name}: dynamo export failed, the TorchScript fallback was used"
            )
            model = onnx.load(path)
            (dim0, *_) = model.graph.input[0].type.tensor_type.shape.dim
            assert dim0.dim_param, f"{name}: batch dimension is not symbolic: {dim0}"


@pytest.mark.parametrize(("name", "opt"), VARIANTS)
def test_optimize_file_matches_torch_eager(name, opt, optimized_files):
    src, dst, report = optimized_files(name, opt)
    assert dst.is_file()
    assert report.checked and report.output_path == str(dst)
    assert report.max_abs_error is not None and report.max_abs_error <= 1e-3
    model = onnx.load(dst)
    onnx.checker.check_model(model, full_check=True)
    source_nodes = len(onnx.load(src).graph.node)
    assert len(model.graph.node) <= source_nodes
    assert report.after.nodes <= report.before.nodes
    if not opt:  # the raw export leaves work: the clean-up must have done some
        assert len(model.graph.node) < source_nodes
        assert report.after.nodes < report.before.nodes
    for batch in (1, 3):
        inputs = _inputs(name, batch, seed=10 + batch)
        expected = models.eager_outputs(name, inputs)
        (got,) = models.run_ort(dst, _feed(inputs))
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(("name", "opt"), VARIANTS)
def test_optimize_in_memory_matches_torch_eager(name, opt):
    source = onnx.load(models.exported(name, opt))
    before = source.SerializeToString()
    result = optimizer.optimize(source)
    assert source.SerializeToString() == before, "optimize() mutated its input ModelProto"
    assert isinstance(result, onnx.ModelProto) and result is not source
    onnx.checker.check_model(result, full_check=True)
    assert len(result.graph.node) <= len(source.graph.node)
    for batch in (1, 3):
        inputs = _inputs(name, batch, seed=20 + batch)
        expected = models.eager_outputs(name, inputs)
        (got,) = models.run_ort(result, _feed(inputs))
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", NAMES)
def test_raw_export_is_cleaned_up(name):
    """The raw export leaves Identity and Constant nodes and constant work: all must go."""
    source = onnx.load(models.exported(name, False))
    counts = _op_counts(source)
    assert counts.get("Identity", 0) + counts.get("Constant", 0) > 0, "fixture leaves no work"
    result = optimizer.optimize(source)
    after = _op_counts(result)
    assert len(result.graph.node) < len(source.graph.node)
    assert after.get("Identity", 0) == 0, after
    assert after.get("Constant", 0) == 0, after
    assert after.get("Dropout", 0) == 0, after
    # the cleaned raw export is no bigger than what the exporter's own optimizer produces
    # for the convolution/matmul skeleton: the compute ops all survive, none are duplicated
    for op in ("Conv", "MatMul", "Gemm", "Softmax", "LayerNormalization"):
        assert after.get(op, 0) == counts.get(op, 0), op


@pytest.mark.parametrize(("name", "opt"), VARIANTS)
def test_ir_invariants_hold_after_every_pass(name, opt):
    source = onnx.load(models.exported(name, opt))
    graph, _ = onnx_io.import_model(source)
    graph.check()
    result, passes = run_passes(graph, PASSES, check=True)
    result.check()
    assert [p.name for p in passes][: len(PASSES)] == list(PASSES)
    assert all(p.nodes_after <= p.nodes_before for p in passes), passes
    assert len(result.nodes()) <= len(graph.nodes())


@pytest.mark.parametrize(("name", "opt"), VARIANTS)
def test_unchanged_round_trip_computes_the_same(name, opt):
    source = onnx.load(models.exported(name, opt))
    before = source.SerializeToString()
    graph, _ = onnx_io.import_model(source)
    exported = onnx_io.to_proto(graph)
    assert source.SerializeToString() == before, "import mutated its input ModelProto"
    onnx.checker.check_model(exported, full_check=True)
    assert [i.name for i in exported.graph.input] == [i.name for i in source.graph.input]
    assert [o.name for o in exported.graph.output] == [o.name for o in source.graph.output]
    for batch in (1, 3):
        feed = _feed(_inputs(name, batch, seed=30 + batch))
        (want,) = models.run_ort(source, feed)
        (got,) = models.run_ort(exported, feed)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_optimize_from_path_leaves_the_file_alone():
    path = models.exported("cnn", False)
    before = path.read_bytes()
    result = optimizer.optimize(str(path))
    assert path.read_bytes() == before
    onnx.checker.check_model(result)
    assert len(result.graph.node) < len(onnx.load(path).graph.node)
