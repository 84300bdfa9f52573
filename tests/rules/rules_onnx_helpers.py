"""Small ONNX models for the rule tests: one checked way to finish a graph written with
onnx.helper (opset 17, IR version 8, full checker)."""

from __future__ import annotations

import onnx
from onnx import helper


def checked_model(nodes, name: str, inputs, outputs, inits) -> onnx.ModelProto:
    """The opset-17 model of graph ``name``, after onnx's full check."""
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
