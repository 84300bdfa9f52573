"""Shared helpers of the rewrite tests: the example rules and small ONNX model builders.

(A plain module with a unique name rather than a conftest, so that test files can import it
unambiguously.)
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from optimizer import onnx_io
from optimizer.rewrite import load_rules, parse_rules

FIXTURES = Path(__file__).parent / "fixtures"
OPSET = 18


@functools.lru_cache(maxsize=1)
def example_rules():
    """The rules of ``fixtures/examples.rules`` by name."""
    return {r.name: r for r in load_rules(FIXTURES)}


def rule(text: str, family: str = "test"):
    """Parse one rule."""
    (parsed,) = parse_rules(text, family=family)
    return parsed


def tensor(name: str, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, dims)


def init(name: str, array) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def model(nodes, inputs, outputs, initializers=(), opset: int = OPSET) -> onnx.ModelProto:
    """A checked ONNX model from helper pieces."""
    graph = helper.make_graph(nodes, "test", inputs, outputs, initializer=list(initializers))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto


def imported(proto: onnx.ModelProto):
    """The IR graph of ``proto``, checked."""
    graph, _ = onnx_io.import_model(proto, None)
    graph.check()
    return graph


def rand(*shape, seed: int = 0, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape).astype(np.float32)


# ------------------------------------------------------------------ IR builders


def ir_input(name: str, shape, dtype=None):
    """A graph input value of a float (by default) tensor."""
    from optimizer.ir import DType, TensorType, graph_input

    return graph_input(name, TensorType(dtype or DType.FLOAT, tuple(shape)))


def ir_const(array):
    from optimizer.ir import TensorData, constant

    return constant(TensorData.from_array(np.asarray(array)))


def ir_op(op: str, *inputs, outputs: int = 1, domain: str = "", **attrs):
    """A node with inferred output types: its value, or its values when ``outputs`` > 1."""
    from optimizer.rewrite.expr import build_node

    node = build_node(op, list(inputs), attrs, domain=domain, num_outputs=outputs, opset=OPSET)
    return node.outputs[0] if outputs == 1 else node.outputs


def ir_graph(inputs, outputs, names=None):
    from optimizer.ir import Graph, ModelMeta

    names = tuple(names or (f"out{i}" for i in range(len(outputs))))
    meta = ModelMeta(opset_imports=(("", OPSET),))
    graph = Graph(tuple(inputs), tuple(outputs), names, meta=meta)
    graph.check()
    return graph
