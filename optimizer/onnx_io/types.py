"""Translation of ONNX type protos, attributes and tensors to IR objects and back."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from optimizer.errors import UnsupportedModelError
from optimizer.ir import Attr, Dim, DType, OpaqueType, Subgraph, TensorData, TensorType, ValueType

_ATTR_KIND = {
    onnx.AttributeProto.INT: "int",
    onnx.AttributeProto.FLOAT: "float",
    onnx.AttributeProto.STRING: "string",
    onnx.AttributeProto.TENSOR: "tensor",
    onnx.AttributeProto.GRAPH: "graph",
    onnx.AttributeProto.INTS: "ints",
    onnx.AttributeProto.FLOATS: "floats",
    onnx.AttributeProto.STRINGS: "strings",
    onnx.AttributeProto.TENSORS: "tensors",
    onnx.AttributeProto.GRAPHS: "graphs",
    onnx.AttributeProto.SPARSE_TENSOR: "opaque:sparse_tensor",
    onnx.AttributeProto.SPARSE_TENSORS: "opaque:sparse_tensors",
    onnx.AttributeProto.TYPE_PROTO: "opaque:type_proto",
    onnx.AttributeProto.TYPE_PROTOS: "opaque:type_protos",
}


@dataclass(frozen=True)
class ExternalRef:
    """Where a tensor's raw little-endian bytes lie in a file (absolute path)."""

    path: str
    offset: int
    length: int


# ------------------------------------------------------------------ types


def type_from_proto(proto: onnx.TypeProto) -> ValueType:
    """The IR type of an ONNX TypeProto (non-tensor types are kept opaque)."""
    if proto.WhichOneof("value") != "tensor_type":
        return OpaqueType(proto.SerializeToString(deterministic=True))
    tensor = proto.tensor_type
    try:
        dtype = DType(tensor.elem_type)
    except ValueError:
        dtype = DType.UNDEFINED
    if not tensor.HasField("shape"):
        return TensorType(dtype, None)
    dims: list[Dim] = []
    for dim in tensor.shape.dim:
        kind = dim.WhichOneof("value")
        dims.append(dim.dim_value if kind == "dim_value" else dim.dim_param if kind == "dim_param" else None)
    return TensorType(dtype, tuple(dims))


def type_to_proto(value_type: ValueType) -> onnx.TypeProto:
    """The ONNX TypeProto of an IR type."""
    proto = onnx.TypeProto()
    if isinstance(value_type, OpaqueType):
        proto.ParseFromString(value_type.encoded)
        return proto
    tensor = proto.tensor_type
    tensor.elem_type = int(value_type.dtype)
    if value_type.shape is not None:
        tensor.shape.SetInParent()
        for d in value_type.shape:
            dim = tensor.shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            elif isinstance(d, str):
                dim.dim_param = d
    return proto


# ------------------------------------------------------------------ tensors


def tensor_from_proto(proto: onnx.TensorProto, base_dir: str | None) -> TensorData:
    """A lazily loaded :class:`TensorData` for an initializer or attribute tensor.

    External data (including the lazy loader's references into the model file
    itself) is memory-mapped on first use; in-memory protos are decoded on first
    use without copying the proto.
    """
    try:
        dtype = DType(proto.data_type)
    except ValueError as exc:
        raise UnsupportedModelError(f"tensor {proto.name!r}: unknown data type {proto.data_type}") from exc
    shape = tuple(int(d) for d in proto.dims)
    if proto.data_location == onnx.TensorProto.EXTERNAL:
        ref = _external_ref(proto, base_dir)
        return TensorData(dtype, shape, lambda: _load_external(proto, ref, dtype, shape), source=ref)
    return TensorData(dtype, shape, lambda: numpy_helper.to_array(proto), source=proto)


def _external_ref(proto: onnx.TensorProto, base_dir: str | None) -> ExternalRef:
    from optimizer.onnx_io.wire import resolve_external_location

    info = {entry.key: entry.value for entry in proto.external_data}
    if base_dir is None:
        raise UnsupportedModelError(
            f"tensor {proto.name!r} has external data; load the model from its path instead"
        )
    path = str(resolve_external_location(base_dir, info.get("location", "")))
    offset = int(info.get("offset", 0))
    if "length" in info:
        length = int(info["length"])
    else:
        length = os.path.getsize(path) - offset
    return ExternalRef(path, offset, length)


def _load_external(proto: onnx.TensorProto, ref: ExternalRef, dtype: DType, shape: tuple) -> np.ndarray:
    if dtype.itemsize >= 1 and dtype != DType.STRING:
        raw = np.memmap(ref.path, dtype=np.uint8, mode="r", offset=ref.offset, shape=(ref.length,))
        return raw.view(dtype.to_numpy()).reshape(shape)
    # Sub-byte and string types need ONNX's own decoding.
    header = onnx.TensorProto()
    header.name, header.data_type = proto.name, proto.data_type
    header.dims.extend(proto.dims)
    with open(ref.path, "rb") as handle:
        handle.seek(ref.offset)
        header.raw_data = handle.read(ref.length)
    return numpy_helper.to_array(header)


def array_from_bytes(dtype: DType, shape: tuple[int, ...], raw: bytes) -> np.ndarray:
    """Values from ONNX's raw little-endian layout (sub-byte types packed), as numpy."""
    proto = onnx.TensorProto()
    proto.data_type = int(dtype)
    proto.dims.extend(shape)
    proto.raw_data = raw
    return numpy_helper.to_array(proto)


def tensor_to_proto(data: TensorData, name: str) -> onnx.TensorProto:
    """An initializer proto; unchanged weights reuse their source without decoding."""
    source = data.source
    if isinstance(source, ExternalRef):
        proto = onnx.TensorProto()
        proto.name = name
        proto.data_type = int(data.dtype)
        proto.dims.extend(data.shape)
        proto.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (("location", source.path), ("offset", source.offset), ("length", source.length)):
            entry = proto.external_data.add()
            entry.key, entry.value = key, str(value)
        return proto
    if isinstance(source, onnx.TensorProto):
        proto = onnx.TensorProto()
        proto.CopyFrom(source)
        proto.name = name
        return proto
    array = data.numpy()
    if data.dtype in (DType.BFLOAT16,) or data.dtype.itemsize < 1:
        return numpy_helper.from_array(array, name)  # ml_dtypes arrays know their ONNX type
    proto = numpy_helper.from_array(np.asarray(array), name)
    if proto.data_type != int(data.dtype):
        proto.data_type = int(data.dtype)
    return proto


# ------------------------------------------------------------------ attributes


def attr_from_proto(attr: onnx.AttributeProto, base_dir: str | None) -> tuple[str, Attr]:
    """The IR attribute of an ONNX AttributeProto."""
    if attr.ref_attr_name:
        raise UnsupportedModelError(f"attribute {attr.name!r} refers to a function attribute")
    kind = _ATTR_KIND.get(attr.type)
    if kind is None:
        raise UnsupportedModelError(f"attribute {attr.name!r} has unknown type {attr.type}")
    value: Any
    if kind == "int":
        value = attr.i
    elif kind == "float":
        value = attr.f
    elif kind == "string":
        value = attr.s
    elif kind == "tensor":
        value = tensor_from_proto(attr.t, base_dir)
    elif kind == "graph":
        value = subgraph_from_proto(attr.g)
    elif kind == "ints":
        value = tuple(attr.ints)
    elif kind == "floats":
        value = tuple(attr.floats)
    elif kind == "strings":
        value = tuple(attr.strings)
    elif kind == "tensors":
        value = tuple(tensor_from_proto(t, base_dir) for t in attr.tensors)
    elif kind == "graphs":
        value = tuple(subgraph_from_proto(g) for g in attr.graphs)
    else:
        value = attr.SerializeToString(deterministic=True)
    return attr.name, Attr(kind, value)


def attr_to_proto(name: str, attr: Attr) -> onnx.AttributeProto:
    """The ONNX AttributeProto of an IR attribute."""
    if attr.kind.startswith("opaque:"):
        proto = onnx.AttributeProto()
        proto.ParseFromString(attr.value)
        proto.name = name
        return proto
    kind, value = attr.kind, attr.value
    proto = onnx.AttributeProto()
    proto.name = name
    if kind == "int":
        proto.type, proto.i = onnx.AttributeProto.INT, value
    elif kind == "float":
        proto.type, proto.f = onnx.AttributeProto.FLOAT, value
    elif kind == "string":
        proto.type, proto.s = onnx.AttributeProto.STRING, value
    elif kind == "tensor":
        proto.type = onnx.AttributeProto.TENSOR
        proto.t.CopyFrom(_inline_tensor(value))
    elif kind == "graph":
        proto.type = onnx.AttributeProto.GRAPH
        proto.g.ParseFromString(value.encoded)
    elif kind == "ints":
        proto.type = onnx.AttributeProto.INTS
        proto.ints.extend(value)
    elif kind == "floats":
        proto.type = onnx.AttributeProto.FLOATS
        proto.floats.extend(value)
    elif kind == "strings":
        proto.type = onnx.AttributeProto.STRINGS
        proto.strings.extend(value)
    elif kind == "tensors":
        proto.type = onnx.AttributeProto.TENSORS
        proto.tensors.extend(_inline_tensor(t) for t in value)
    elif kind == "graphs":
        proto.type = onnx.AttributeProto.GRAPHS
        for sub in value:
            proto.graphs.add().ParseFromString(sub.encoded)
    else:  # pragma: no cover - kinds are closed
        raise UnsupportedModelError(f"attribute kind {kind}")
    return proto


def _inline_tensor(data: TensorData) -> onnx.TensorProto:
    """Attribute tensors are always written inline (ONNX allows external data only for weights)."""
    if isinstance(data.source, onnx.TensorProto):
        return data.source
    proto = numpy_helper.from_array(np.asarray(data.numpy()))
    proto.data_type = int(data.dtype) if data.dtype.itemsize >= 1 else proto.data_type
    return proto


# ------------------------------------------------------------------ subgraphs


def subgraph_from_proto(graph: onnx.GraphProto) -> Subgraph:
    """A carried-through control-flow body with the outer names it reads."""
    defined: set[str] = set()
    used: set[str] = set()
    _scan_names(graph, defined, used)
    captured = tuple(sorted(n for n in used if n and n not in defined))
    return Subgraph(graph.SerializeToString(deterministic=True), captured, frozenset(defined))


def _scan_names(graph: onnx.GraphProto, defined: set[str], used: set[str]) -> None:
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer):
        # Bodies are carried as bytes; their file references could not be checked or moved.
        raise UnsupportedModelError("external data inside a control-flow subgraph is not supported")
    defined.update(v.name for v in graph.input)
    defined.update(t.name for t in graph.initializer)
    defined.update(t.values.name for t in graph.sparse_initializer)
    for node in graph.node:
        used.update(node.input)
        defined.update(node.output)
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                inner_defined: set[str] = set()
                inner_used: set[str] = set()
                _scan_names(sub, inner_defined, inner_used)
                defined.update(inner_defined)
                used.update(inner_used - inner_defined)
    used.update(v.name for v in graph.output)
