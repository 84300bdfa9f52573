"""ONNX's operator schemas and shape inference, plugged into the IR's op registry.

The IR stays free of onnx imports; importing :mod:`optimizer.onnx_io` installs
these hooks on :data:`optimizer.ir.REGISTRY`.
"""

from __future__ import annotations

import functools

import onnx

from optimizer.ir import REGISTRY, Node, ValueType
from optimizer.onnx_io.types import (
    attr_from_proto,
    attr_to_proto,
    tensor_to_proto,
    type_from_proto,
    type_to_proto,
)

#: Constant inputs up to this many elements are given to inference as data (shape tensors).
_CONSTANT_DATA_LIMIT = 1024


@functools.lru_cache(maxsize=4096)
def schema_of(domain: str, op: str, opset: int | None) -> onnx.defs.OpSchema | None:
    """ONNX's schema of ``op`` in ``domain`` (at ``opset`` when given), or None."""
    domain = "" if domain == "ai.onnx" else domain
    try:
        if opset is None:
            return onnx.defs.get_schema(op, domain)
        return onnx.defs.get_schema(op, opset, domain)
    except Exception:  # noqa: BLE001 - SchemaError when absent at that version
        return None


def has_schema(domain: str, op: str, opset: int | None) -> bool:
    """Whether ONNX defines ``op`` in ``domain`` (at ``opset`` when given)."""
    return schema_of(domain, op, opset) is not None


def infer_node_types(node: Node, opset: int | None) -> list[ValueType] | None:
    """Output types of one node by ONNX shape inference (None when it cannot tell)."""
    if node.domain not in ("", "ai.onnx.ml") or not has_schema(node.domain, node.op, opset):
        return None
    inputs, initializers, names = [], [], []
    for i, value in enumerate(node.inputs):
        if value is None:
            names.append("")
            continue
        name = f"in{i}"
        names.append(name)
        data = value.constant
        if data is not None and data.size <= _CONSTANT_DATA_LIMIT:
            initializers.append(tensor_to_proto(data, name))
        inputs.append(onnx.helper.make_value_info(name, type_to_proto(value.type)))
    outputs = [f"out{i}" for i in range(len(node.outputs))]
    proto = onnx.helper.make_node(node.op, names, outputs, domain=node.domain)
    proto.attribute.extend(attr_to_proto(k, a) for k, a in node.attrs)
    graph = onnx.helper.make_graph([proto], "infer", inputs, [], initializer=initializers)
    opsets = [onnx.helper.make_opsetid(node.domain, opset or onnx.defs.onnx_opset_version())]
    if node.domain:
        opsets.append(onnx.helper.make_opsetid("", onnx.defs.onnx_opset_version()))
    model = onnx.helper.make_model(graph, opset_imports=opsets)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception:  # noqa: BLE001 - inference failures just mean "unknown"
        return None
    found = {v.name: type_from_proto(v.type) for v in inferred.graph.value_info}
    types = [found.get(name) for name in outputs]
    if any(t is None for t in types):
        return None
    return types


@functools.lru_cache(maxsize=8192)
def attribute_default(domain: str, op: str, opset: int | None, name: str):
    """The schema default of attribute ``name`` of ``op`` as the IR stores attribute values
    (ints as tuples, strings as bytes, tensors as TensorData), or None when it has none."""
    schema = schema_of(domain, op, opset)
    attr = None if schema is None else schema.attributes.get(name)
    if attr is None or attr.default_value.type == onnx.AttributeProto.UNDEFINED:
        return None
    try:
        return attr_from_proto(attr.default_value, None)[1].value
    except Exception:  # noqa: BLE001 - kinds the IR cannot hold have no usable default
        return None


@functools.lru_cache(maxsize=4096)
def op_signature(domain: str, op: str, opset: int | None):
    """(fewest inputs, most inputs, attribute names) of ``op`` at ``opset``, or None when ONNX
    does not define it there."""
    schema = schema_of(domain, op, opset)
    if schema is None:
        return None
    return schema.min_input, schema.max_input, frozenset(schema.attributes)


REGISTRY.schema_provider = has_schema
REGISTRY.op_signature = op_signature
REGISTRY.attribute_default = attribute_default
REGISTRY.fallback_infer = infer_node_types
