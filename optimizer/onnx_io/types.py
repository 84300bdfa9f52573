"""Translation of ONNX type protos, attributes and tensors to IR objects and back."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from optimizer.errors import ModelLoadError, UnsupportedModelError
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
    """Where a tensor's raw little-endian bytes lie in a file (absolute path).

    ``file_id`` (device, inode, mtime, size) identifies the file as it was when
    the model was imported; reading from a file that has changed since is refused.
    """

    path: str
    offset: int
    length: int
    file_id: tuple[int, int, int, int]

    def verify(self) -> None:
        """Raise ModelLoadError when the file is gone or no longer the one imported."""
        try:
            now = _file_id(self.path)
        except OSError as exc:
            raise ModelLoadError(f"{self.path}: cannot read weights: {exc.strerror}") from None
        if now != self.file_id:
            raise ModelLoadError(f"{self.path}: file changed on disk since the model was loaded")


def _file_id(path: str) -> tuple[int, int, int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


class ModelOrigin:
    """Identity token of one in-memory model: its constants merge only with each other."""

    __slots__ = ()


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
        dims.append(
            dim.dim_value if kind == "dim_value" else dim.dim_param if kind == "dim_param" else None
        )
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


def tensor_from_proto(
    proto: onnx.TensorProto, base_dir: str | None, origin: ModelOrigin | None = None
) -> TensorData:
    """A lazily loaded :class:`TensorData` for an initializer or attribute tensor.

    External data (including the lazy loader's references into the model file
    itself) is memory-mapped on first use; in-memory protos are decoded on first
    use without copying the proto.
    """
    dtype, shape = _check_tensor(proto)
    if proto.data_location == onnx.TensorProto.EXTERNAL:
        ref = _external_ref(proto, base_dir, dtype, shape)
        load = lambda: _load_external(proto, ref, dtype, shape)  # noqa: E731
        return TensorData(dtype, shape, load, source=ref, origin=ref.file_id)
    # The proto belongs to the caller's model: tie the tensor to that model (origin), so a
    # later import of another model never exports this proto's bytes as its own.
    origin = origin if origin is not None else ModelOrigin()
    return TensorData(
        dtype, shape, lambda: numpy_helper.to_array(proto), source=proto, origin=origin
    )


#: Typed-data fields that hold one entry per packed byte (sub-byte types) or per element.
_PACKED = frozenset({DType.UINT4, DType.INT4, DType.FLOAT4E2M1, DType.UINT2, DType.INT2})


def _packed_bytes(dtype: DType, count: int) -> int:
    """Bytes of ``count`` elements in ONNX's raw little-endian layout (sub-byte types packed)."""
    bits = round(dtype.itemsize * 8)
    return (count * bits + 7) // 8


def _check_tensor(proto: onnx.TensorProto) -> tuple[DType, tuple[int, ...]]:
    """The dtype and shape of ``proto``, after checking that its data fits them.

    Raises :class:`ModelLoadError` (one line, naming the tensor) for an UNDEFINED type,
    negative dims, or data whose length does not match the dims: decoding such a tensor
    later would fail with numpy's errors instead.
    """
    what = f"tensor {proto.name!r}"
    if proto.data_type == onnx.TensorProto.UNDEFINED:
        raise ModelLoadError(f"{what}: data type is UNDEFINED")
    try:
        dtype = DType(proto.data_type)
    except ValueError:
        raise UnsupportedModelError(f"{what}: unknown data type {proto.data_type}") from None
    shape = tuple(int(d) for d in proto.dims)
    if any(d < 0 for d in shape):
        raise ModelLoadError(f"{what}: negative dimension in shape {list(shape)}")
    if proto.HasField("segment"):
        raise UnsupportedModelError(f"{what}: segmented tensors are not supported")
    if proto.data_location == onnx.TensorProto.EXTERNAL:
        if dtype == DType.STRING:
            raise ModelLoadError(f"{what}: string tensors cannot have external data")
        return dtype, shape  # its length is checked against the file by _external_ref
    count = 1
    for d in shape:
        count *= d
    described = f"{dtype.name.lower()}{list(shape)}"
    if dtype == DType.STRING:
        have, want, unit = len(proto.string_data), count, "strings"
    elif proto.HasField("raw_data"):
        have, want, unit = len(proto.raw_data), _packed_bytes(dtype, count), "bytes of raw_data"
    else:
        field = onnx.helper.tensor_dtype_to_field(int(dtype))
        have, unit = len(getattr(proto, field)), f"values in {field}"
        if dtype in (DType.COMPLEX64, DType.COMPLEX128):
            want = 2 * count
        elif dtype in _PACKED:
            want = _packed_bytes(dtype, count)
        else:
            want = count
    if have != want:
        raise ModelLoadError(f"{what}: {have} {unit} for {described}, expected {want}")
    if dtype == DType.STRING:
        for item in proto.string_data:
            try:
                item.decode("utf-8")
            except UnicodeDecodeError:
                raise ModelLoadError(
                    f"{what}: a string is not valid UTF-8: {item[:20]!r}"
                ) from None
    return dtype, shape


def _external_ref(
    proto: onnx.TensorProto, base_dir: str | None, dtype: DType, shape: tuple[int, ...]
) -> ExternalRef:
    """Where the tensor's bytes lie; the region must exist and hold exactly its data."""
    from optimizer.onnx_io.wire import _region

    if base_dir is None:
        raise UnsupportedModelError(
            f"tensor {proto.name!r} has external data; load the model from its path instead"
        )
    region = _region(proto, base_dir, absolute=False)  # bounds-checked: ModelLoadError
    count = 1
    for d in shape:
        count *= d
    want = _packed_bytes(dtype, count)
    if region.length != want:
        raise ModelLoadError(
            f"tensor {proto.name!r}: external data holds {region.length} bytes "
            f"for {dtype.name.lower()}{list(shape)}, expected {want}"
        )
    path = os.fspath(region.path)
    try:
        file_id = _file_id(path)
    except OSError as exc:
        raise ModelLoadError(f"tensor {proto.name!r}: cannot read {path}: {exc.strerror}") from None
    return ExternalRef(path, region.offset, region.length, file_id)


def _load_external(
    proto: onnx.TensorProto, ref: ExternalRef, dtype: DType, shape: tuple
) -> np.ndarray:
    ref.verify()
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
        source.verify()
        proto = onnx.TensorProto()
        proto.name = name
        proto.data_type = int(data.dtype)
        proto.dims.extend(data.shape)
        proto.data_location = onnx.TensorProto.EXTERNAL
        for key, value in (
            ("location", source.path),
            ("offset", source.offset),
            ("length", source.length),
        ):
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


def attr_from_proto(
    attr: onnx.AttributeProto, base_dir: str | None, origin: ModelOrigin | None = None
) -> tuple[str, Attr]:
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
        value = tensor_from_proto(attr.t, base_dir, origin)
    elif kind == "graph":
        value = subgraph_from_proto(attr.g)
    elif kind == "ints":
        value = tuple(attr.ints)
    elif kind == "floats":
        value = tuple(attr.floats)
    elif kind == "strings":
        value = tuple(attr.strings)
    elif kind == "tensors":
        value = tuple(tensor_from_proto(t, base_dir, origin) for t in attr.tensors)
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
