"""The labeller's IR passes on small hand-built ONNX graphs (no torch needed)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from optimizer import onnx_io
from optimizer.label import passes
from optimizer.label.exceptions import LabelModelError
from optimizer.passes import run_passes

RNG = np.random.default_rng(0)


def _mlp(opset: int = 17, *, training: bool = False, softmax: bool = False) -> onnx.ModelProto:
    """x[batch,6] -> Gemm -> Relu -> Dropout -> Gemm -> (Softmax) -> out[batch,3]."""
    w1 = RNG.normal(size=(5, 6)).astype(np.float32)
    w2 = RNG.normal(size=(3, 5)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(np.zeros(5, np.float32), "b1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.zeros(3, np.float32), "b2"),
    ]
    drop_inputs = ["relu"]
    if opset >= 12:
        inits += [
            numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
            numpy_helper.from_array(np.array(training), "mode"),
        ]
        drop_inputs += ["ratio", "mode"]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["hidden"], transB=1),
        helper.make_node("Relu", ["hidden"], ["relu"]),
        helper.make_node("Dropout", drop_inputs, ["drop"]),
        helper.make_node("Gemm", ["drop", "w2", "b2"], ["logits"], transB=1),
    ]
    out = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
        out = "probs"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", 3])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _import(model: onnx.ModelProto):
    graph, _ = onnx_io.import_model(model, None)
    return graph


def _session(graph, *, keep_dropout: bool = False) -> ort.InferenceSession:
    proto = onnx_io.to_proto(graph)
    onnx.checker.check_model(proto)
    kwargs = {"disabled_optimizers": ["EliminateDropout"]} if keep_dropout else {}
    return ort.InferenceSession(
        proto.SerializeToString(), providers=["CPUExecutionProvider"], **kwargs
    )


def test_find_penultimate_skips_the_head_and_dropout_copies():
    graph = _import(_mlp(softmax=True))
    found = passes.find_penultimate(graph, graph.outputs[0])
    # Behind Softmax and the last Gemm sits the Dropout; its input (the Relu) is the layer.
    assert found.node.op == "Relu"
    assert passes.name_of(graph, found) == "relu"


def test_find_penultimate_refuses_a_model_without_a_classifier_layer():
    graph_proto = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    graph = _import(helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(LabelModelError, match="penultimate"):
        passes.find_penultimate(graph, graph.outputs[0])


def test_expose_value_adds_an_output_that_equals_the_intermediate_tensor():
    model = _mlp()
    graph = _import(model)
    exposed = passes.expose_value(graph, passes.value_by_name(graph, "relu"), "embedding")
    assert exposed.output_names == ("logits", "embedding")
    exposed.check()
    x = RNG.normal(size=(7, 6)).astype(np.float32)
    logits, emb = _session(exposed).run(None, {"x": x})
    # Reference: the same model with 'relu' declared an output, run by plain onnxruntime.
    ref_model = onnx.ModelProto()
    ref_model.CopyFrom(model)
    ref_model.graph.output.append(helper.make_tensor_value_info("relu", TensorProto.FLOAT, None))
    ref = ort.InferenceSession(ref_model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref_logits, ref_emb = ref.run(["logits", "relu"], {"x": x})
    np.testing.assert_array_equal(emb, ref_emb)
    np.testing.assert_array_equal(logits, ref_logits)


def test_expose_value_of_an_output_is_a_no_op_and_names_must_be_new():
    graph = _import(_mlp())
    assert passes.expose_value(graph, graph.outputs[0], "other") is graph
    with pytest.raises(LabelModelError, match="already has an output"):
        passes.expose_value(graph, passes.value_by_name(graph, "relu"), "logits")


def test_value_by_name_lists_the_tensors_when_missing():
    graph = _import(_mlp())
    with pytest.raises(LabelModelError, match="no tensor named 'nope'.*relu"):
        passes.value_by_name(graph, "nope")


def test_dropout_off_is_removed_by_the_optimizer_and_on_survives_it():
    graph = _import(_mlp(training=True))
    off, _ = run_passes(passes.set_dropout_training(graph, False))
    assert passes.count_dropouts(off) == 0
    on, _ = run_passes(passes.set_dropout_training(graph, True, seed=1))
    assert passes.count_dropouts(on) == 1
    node = next(n for n in on.nodes() if n.op == "Dropout")
    assert node.unique is not None  # never merged nor folded
    assert bool(node.inputs[2].constant.numpy()) is True
    assert node.attr("seed") == 1


def _twin_dropouts() -> onnx.ModelProto:
    """y = Dropout(x) + Dropout(x): two structurally equal Dropouts over one input."""
    inits = [
        numpy_helper.from_array(np.array(0.5, np.float32), "ratio"),
        numpy_helper.from_array(np.array(False), "mode"),
    ]
    nodes = [
        helper.make_node("Dropout", ["x", "ratio", "mode"], ["a"]),
        helper.make_node("Dropout", ["x", "ratio", "mode"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "twins",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_training_dropouts_are_never_merged():
    """At inference the two Dropouts are one computation (CSE merges them); in training mode
    they draw separate masks and must stay two nodes through the optimizer."""
    graph = _import(_twin_dropouts())
    assert passes.count_dropouts(graph) == 1
    on, _ = run_passes(passes.set_dropout_training(graph, True))
    # The importer merged the inference twins; rebuild from the file's two nodes instead.
    model = _twin_dropouts()
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.array(True), "mode"))
    trained = _import(model)
    assert passes.count_dropouts(trained) == 2
    kept, _ = run_passes(passes.set_dropout_training(trained, True, seed=5))
    assert passes.count_dropouts(kept) == 2
    seeds = sorted(n.attr("seed") for n in kept.nodes() if n.op == "Dropout")
    assert seeds == [5, 6]  # one seed per node: their masks are not the same stream
    y = _session(kept, keep_dropout=True).run(None, {"x": np.ones((4, 64), np.float32)})[0]
    # Equal masks would only give 0 or 4 (two scaled copies); independent ones also give 2.
    assert np.isin(2.0, np.round(y, 4))
    assert passes.count_dropouts(on) == 1


def test_mc_graph_draws_all_samples_in_one_run():
    graph = _import(_mlp())
    samples, batch = 8, 5
    g = passes.tile_batch(passes.set_dropout_training(graph, True, seed=3), samples)
    g.check()
    g, _ = run_passes(g)
    assert any(n.op == "Tile" for n in g.nodes())
    x = RNG.normal(size=(batch, 6)).astype(np.float32)
    out = _session(g, keep_dropout=True).run(None, {"x": x})[0]
    assert out.shape == (samples * batch, 3)
    stacked = out.reshape(samples, batch, 3)
    # Every copy sees the same item but another dropout mask: the samples differ.
    assert not np.allclose(stacked[0], stacked[1])
    # With the dropout ratio at 0 the tiled graph is the plain model, copy by copy.
    g0 = passes.tile_batch(passes.set_dropout_training(graph, True, ratio=0.0), samples)
    out0 = _session(g0, keep_dropout=True).run(None, {"x": x})[0].reshape(samples, batch, 3)
    plain = _session(passes.set_dropout_training(graph, False)).run(None, {"x": x})[0]
    for t in range(samples):
        np.testing.assert_allclose(out0[t], plain, rtol=1e-6, atol=1e-6)


def test_tile_batch_types_do_not_claim_the_old_batch():
    graph = _import(_mlp())
    g = passes.tile_batch(graph, 4)
    # Outputs must not keep the symbolic 'batch' of the input: their batch is 4x larger.
    assert g.outputs[0].type.shape[0] != "batch"
    assert g.meta.output_types == ()


def test_mc_dropout_needs_opset_12():
    graph = _import(_mlp(opset=11))
    with pytest.raises(LabelModelError, match="opset 12"):
        passes.set_dropout_training(graph, True)
    # Switching off is fine at any opset (Dropout already copies at inference there).
    passes.set_dropout_training(graph, False).check()


def test_tile_batch_refuses_bad_counts():
    graph = _import(_mlp())
    with pytest.raises(LabelModelError):
        passes.tile_batch(graph, 0)
    assert passes.tile_batch(graph, 1) is graph
