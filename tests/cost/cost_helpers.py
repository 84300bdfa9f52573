"""Small graphs and ONNX models for the cost-model tests, and a counter of onnxruntime sessions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from optimizer import onnx_io
from optimizer.ir import DType, Graph, ModelMeta, Node, TensorData, TensorType, constant
from optimizer.ir import graph_input as ir_input


def f32(*shape) -> TensorType:
    return TensorType(DType.FLOAT, tuple(shape))


def op(name: str, inputs: Sequence, out: TensorType, **attrs) -> Node:
    return Node.make(name, list(inputs), attrs, output_types=[out])


def const(array) -> object:
    return constant(TensorData.from_array(np.asarray(array)))


def graph(outputs: Sequence, inputs: Sequence, opset: int = 17) -> Graph:
    return Graph(
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        output_names=tuple(f"y{i}" for i in range(len(outputs))),
        meta=ModelMeta(ir_version=8, opset_imports=(("", opset),)),
    )


def mlp_graph(batch=4, width=32) -> Graph:
    """x -> MatMul(W) -> Add(b) -> Relu, plus a Relu of a constant (free: foldable)."""
    rng = np.random.default_rng(0)
    x = ir_input("x", f32(batch, width))
    w = const(rng.standard_normal((width, width)).astype(np.float32))
    b = const(rng.standard_normal((width,)).astype(np.float32))
    mm = op("MatMul", [x, w], f32(batch, width)).output
    add = op("Add", [mm, b], f32(batch, width)).output
    relu = op("Relu", [add], f32(batch, width)).output
    folded = op("Relu", [b], f32(width)).output  # computable from constants alone
    out = op("Add", [relu, folded], f32(batch, width)).output
    return graph([out], [x])


def onnx_chain_model(chain: int = 0, size: int = 16384) -> onnx.ModelProto:
    """y = Relu(x) + z, with ``chain`` extra Adds of the run-time input z (fed zeros) that no
    optimizer may remove: a model that is trivially slower for larger ``chain``."""
    nodes = [helper.make_node("Relu", ["x"], ["h0"])]
    for i in range(chain):
        nodes.append(helper.make_node("Add", [f"h{i}", "z"], [f"h{i + 1}"]))
    nodes.append(helper.make_node("Add", [f"h{chain}", "z"], ["y"]))
    g = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size]) for n in ("x", "z")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [size])],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def onnx_cnn_model() -> onnx.ModelProto:
    """A tiny CNN: Conv -> Relu -> Conv -> Add(residual) -> GlobalAveragePool -> Flatten."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Add", ["c2", "r1"], ["s"], name="residual"),
        helper.make_node("GlobalAveragePool", ["s"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["y"], name="flatten"),
    ]
    g = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        initializer=[w1, w2],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)


def imported(model: onnx.ModelProto) -> Graph:
    graph_, _ = onnx_io.import_model(model)
    return graph_


class SessionCounter:
    """Counts onnxruntime sessions created while installed (monkeypatch fixture)."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        real = ort.InferenceSession
        counter = self

        class Counting(real):  # type: ignore[misc, valid-type]
            def __init__(self, *args, **kwargs) -> None:
                counter.count += 1
                super().__init__(*args, **kwargs)

        monkeypatch.setattr(ort, "InferenceSession", Counting)
