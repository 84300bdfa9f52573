"""Constant folding: evaluate every node whose inputs are all constants.

The constant region is evaluated in one onnxruntime session (as onnxsim
does), so folded values are exactly what the runtime would have computed.
``Shape`` and ``Size`` of tensors with static shapes fold without running
anything. Results larger than ``size_limit`` bytes are not materialised: a
folded weight would grow the file, and the runtime computes it once anyway.
"""

from __future__ import annotations

import numpy as np

from optimizer.ir import DType, Graph, Node, TensorData, TensorType, Value, constant, transform
from optimizer.ir.ops import CONTROL_FLOW_OPS, NONDETERMINISTIC_OPS
from optimizer.ir.types import is_static, num_elements

#: Default largest tensor (bytes) folding may create.
DEFAULT_SIZE_LIMIT = 64 * 1024 * 1024


def _static_shape_value(node: Node) -> np.ndarray | None:
    """The value of Shape/Size over a statically shaped input, else None."""
    if node.domain != "" or node.op not in ("Shape", "Size") or node.inputs[0] is None:
        return None
    t = node.inputs[0].type
    if not isinstance(t, TensorType) or not is_static(t.shape):
        return None
    shape = np.array(t.shape, dtype=np.int64)
    if node.op == "Size":
        return np.array(num_elements(t.shape), dtype=np.int64)
    rank = len(shape)
    start, end = node.attr("start", 0), node.attr("end", rank)
    return shape[slice(start, end)]


def fold_constants(graph: Graph, *, size_limit: int = DEFAULT_SIZE_LIMIT) -> Graph:
    """Replace constant computations by their values (see the module docstring)."""
    graph = _fold_shapes(graph)
    blocked: set[Node] = set()
    for _ in range(8):  # a round only repeats when results exceeded the size limit
        region, boundary = _constant_region(graph, blocked)
        if not boundary:
            return graph
        too_big = [
            v for v in boundary if _static_bytes(v) is not None and _static_bytes(v) > size_limit
        ]
        if too_big:
            blocked.update(v.node for v in too_big)
            continue
        values = _evaluate(graph, boundary)
        if values is None:
            return graph
        oversized = [v for v, a in zip(boundary, values) if a.nbytes > size_limit]
        if oversized:
            blocked.update(v.node for v in oversized)
            continue
        replacement = {
            v: constant(TensorData.from_array(a, _dtype_of(v, a))) for v, a in zip(boundary, values)
        }
        return _replace(graph, replacement)
    return graph


def _dtype_of(value: Value, array: np.ndarray) -> DType:
    if isinstance(value.type, TensorType) and value.type.dtype != DType.UNDEFINED:
        return value.type.dtype
    return DType.from_numpy(array.dtype)


def _plain_tensor(value: Value) -> bool:
    t = value.type
    return isinstance(t, TensorType) and t.dtype not in (DType.STRING, DType.UNDEFINED)


def _static_bytes(value: Value) -> int | None:
    t = value.type
    if not isinstance(t, TensorType):
        return None
    count = num_elements(t.shape)
    return None if count is None else int(count * (t.dtype.itemsize or 8))


def _constant_region(graph: Graph, blocked: set[Node]) -> tuple[set[Node], list[Value]]:
    """Nodes computable from constants alone, and their results that the rest reads."""
    region: set[Node] = set()
    for node in graph.nodes():
        if node in blocked or node.domain != "" or node.unique is not None:
            continue
        if node.op in NONDETERMINISTIC_OPS or node.op in CONTROL_FLOW_OPS or node.captures:
            continue
        if not all(_plain_tensor(v) for v in node.outputs):
            continue  # sequences, maps and strings stay computed
        if node.inputs and all(v is None or v.is_constant or v.node in region for v in node.inputs):
            region.add(node)
    boundary: list[Value] = []
    seen: set[Value] = set()
    for node in graph.nodes():
        if node in region:
            continue
        for value in node.operands:
            if value.node in region and value not in seen:
                seen.add(value)
                boundary.append(value)
    for value in graph.outputs:
        if value.node in region and value not in seen:
            seen.add(value)
            boundary.append(value)
    return region, boundary


def _evaluate(graph: Graph, boundary: list[Value]) -> list[np.ndarray] | None:
    """Run the constant region on onnxruntime; None when the runtime refuses it."""
    from optimizer import runtime
    from optimizer.onnx_io import to_proto

    names = tuple(f"fold_{i}" for i in range(len(boundary)))
    sub = Graph((), tuple(boundary), names, graph.value_names, {}, graph.meta)
    try:
        session = runtime.make_session(
            to_proto(sub), device="cpu", options=runtime.SessionOptionsSpec(opt_level="disable")
        )
        arrays = [_fetch(v) for v in session.run_with_ort_values(list(names), {})]
    except Exception:  # noqa: BLE001 - folding is an optimisation: skip what the runtime cannot do
        return None
    if not all(isinstance(a, np.ndarray) and a.dtype != object for a in arrays):
        return None
    return arrays


def _fetch(value) -> np.ndarray | None:
    """An onnxruntime OrtValue as numpy; types numpy lacks (bfloat16, float8, 4- and 2-bit)
    are rebuilt from their raw bytes, since ``OrtValue.numpy()`` refuses them or, for float8,
    silently returns their bits as uint8."""
    import ctypes

    from optimizer.onnx_io.types import array_from_bytes

    if not value.is_tensor():
        return None
    dtype = DType(value.element_type())
    if dtype == DType.STRING or dtype.to_numpy().type.__module__ == "numpy":
        return value.numpy()
    raw = ctypes.string_at(value.data_ptr(), value.tensor_size_in_bytes())
    return array_from_bytes(dtype, tuple(value.shape()), raw)


def _replace(graph: Graph, replacement: dict[Value, Value]) -> Graph:
    def rewrite(node: Node, inputs: list[Value | None]) -> list[Value] | None:
        if any(v in replacement for v in node.outputs):
            return [replacement.get(v, v) for v in node.outputs]
        return None

    return transform(graph, rewrite, provenance="fold-constants")


def _fold_shapes(graph: Graph) -> Graph:
    def rewrite(node: Node, inputs: list[Value | None]) -> list[Value] | None:
        if node.op in ("Shape", "Size") and inputs[0] is not None:
            value = _static_shape_value(node.with_inputs(inputs))
            if value is not None:
                return [constant(TensorData.from_array(value, DType.INT64))]
        return None

    return transform(graph, rewrite, provenance="fold-constants")
