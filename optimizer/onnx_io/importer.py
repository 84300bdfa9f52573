"""ONNX ModelProto -> IR Graph."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from optimizer.errors import ModelLoadError, ShapeError, UnsupportedModelError
from optimizer.ir import (
    REGISTRY,
    UNKNOWN,
    Attr,
    Graph,
    ModelMeta,
    Node,
    NodeMeta,
    TensorData,
    TensorType,
    Value,
    ValueType,
    constant,
    graph_input,
)
from optimizer.ir.ops import NONDETERMINISTIC_OPS, dropout_trains
from optimizer.onnx_io.schemas import schema_of
from optimizer.onnx_io.types import (
    ModelOrigin,
    attr_from_proto,
    subgraph_from_proto,
    tensor_from_proto,
    type_from_proto,
    type_to_proto,
)
from optimizer.onnx_io.wire import _is_repeated

#: Initializers up to this many bytes keep their data in the skeleton given to shape inference,
#: so that shape computations (Reshape targets, Slice bounds) can be propagated.
_INFERENCE_DATA_LIMIT = 4096


@dataclass(frozen=True)
class ImportStats:
    """What the importer noticed: nodes read, and how many hash-consing merged."""

    onnx_nodes: int
    ir_nodes: int

    @property
    def merged_or_dropped(self) -> int:
        """Nodes that were duplicates (merged) or unreachable (dropped)."""
        return self.onnx_nodes - self.ir_nodes


def import_model(
    model: onnx.ModelProto,
    base_dir: str | None = None,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> tuple[Graph, ImportStats]:
    """Convert ``model`` into an IR graph without modifying or copying its weights.

    ``base_dir`` is the folder external-data locations are relative to.
    ``input_shapes`` fixes the shapes of the named inputs (onnxsim's
    ``--overwrite-input-shape``): the graph is specialised to them, which lets
    shape computations fold. A name that is no input, or a shape that
    contradicts the model, raises :class:`ShapeError`.
    Raises :class:`UnsupportedModelError` for constructs the IR cannot carry
    (unknown standard ops, sparse initializers) and :class:`ModelLoadError`
    for structurally broken graphs.
    """
    if not model.HasField("graph"):
        raise ModelLoadError("not an ONNX model: it has no graph")
    _check_text(model, "model")
    graph = model.graph
    if graph.sparse_initializer:
        raise UnsupportedModelError("sparse initializers are not supported")
    opsets = tuple((imp.domain, imp.version) for imp in model.opset_import)
    if not opsets:
        opsets = (("", 1),) if model.ir_version < 3 else ()
    meta = ModelMeta(
        ir_version=model.ir_version,
        opset_imports=opsets,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        domain=model.domain,
        model_version=model.model_version,
        doc_string=model.doc_string,
        graph_name=graph.name or "graph",
        graph_doc_string=graph.doc_string,
        metadata_props=tuple((p.key, p.value) for p in model.metadata_props),
        passthrough=_passthrough(model),
        value_info_names=frozenset(v.name for v in graph.value_info),
        io_types=tuple(
            (v.name, v.type.SerializeToString(deterministic=True))
            for v in list(graph.input) + list(graph.output)
            if v.type.WhichOneof("value") not in (None, "tensor_type")
        ),
    )
    overrides = _check_overrides(model.graph, input_shapes or {})
    meta = replace(meta, output_types=_declared_output_types(graph, bool(overrides)))
    types, annotated = _inferred_types(model, overrides)
    builder = _Builder(meta, types, annotated, base_dir)
    ir_graph = builder.build(graph)
    stats = ImportStats(len(graph.node), len(ir_graph.nodes()))
    return ir_graph, stats


def _declared_output_types(
    graph: onnx.GraphProto, overridden: bool
) -> tuple[tuple[str, bytes], ...]:
    """Declared tensor types of the outputs; shapes dropped when input shapes are overridden."""
    kept = []
    for info in graph.output:
        if info.type.WhichOneof("value") != "tensor_type":
            continue
        declared = onnx.TypeProto()
        declared.CopyFrom(info.type)
        if overridden:
            declared.tensor_type.ClearField("shape")
        kept.append((info.name, declared.SerializeToString(deterministic=True)))
    return tuple(kept)


def _passthrough(model: onnx.ModelProto) -> tuple[tuple[str, bytes], ...]:
    kept: list[tuple[str, bytes]] = []
    for function in model.functions:
        kept.append(("function", function.SerializeToString(deterministic=True)))
    for info in model.training_info:
        kept.append(("training_info", info.SerializeToString(deterministic=True)))
    for graph_meta in model.graph.metadata_props:
        kept.append(("graph_metadata", graph_meta.SerializeToString(deterministic=True)))
    for node_quant in model.graph.quantization_annotation:
        kept.append(("quantization_annotation", node_quant.SerializeToString(deterministic=True)))
    return tuple(kept)


def _check_overrides(
    graph: onnx.GraphProto, input_shapes: Mapping[str, Sequence[int]]
) -> dict[str, TensorType]:
    """Validate shape overrides against the model's inputs and return the new input types."""
    initializers = {t.name for t in graph.initializer}
    real = {v.name: v for v in graph.input if v.name not in initializers}
    result: dict[str, TensorType] = {}
    for name, dims in input_shapes.items():
        if name not in real:
            raise ShapeError(
                f"--input-shape names {name!r}, which is not an input (inputs: {', '.join(real)})"
            )
        declared = type_from_proto(real[name].type)
        dims = tuple(int(d) for d in dims)
        if not isinstance(declared, TensorType) or any(d <= 0 for d in dims):
            raise ShapeError(f"input {name!r}: cannot take shape {dims}")
        wanted = TensorType(declared.dtype, dims)
        if declared.shape is not None and not declared.compatible_with(wanted):
            raise ShapeError(
                f"input {name!r}: shape {dims} contradicts the model's "
                f"{tuple('?' if d is None else d for d in declared.shape)}"
            )
        result[name] = wanted
    return result


def _inferred_types(
    model: onnx.ModelProto, overrides: Mapping[str, TensorType]
) -> tuple[dict[str, ValueType], frozenset[str]]:
    """Types of every named value, from the model's own annotations and ONNX shape inference,
    and the names whose type the model annotates (value_info, graph outputs).

    Inference runs on a skeleton whose large initializers carry no data, so it
    neither copies weights nor trips over protobuf's 2 GB limit. Where an annotation
    contradicts what a node computes, ONNX's non-strict inference silently keeps the
    annotation: the builder checks annotated node outputs against the op's type function.
    """
    skeleton = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name == "graph":
            continue
        target = getattr(skeleton, field.name)
        if field.is_repeated:
            target.extend(value)
        elif field.message_type is not None:
            target.CopyFrom(value)
        else:
            setattr(skeleton, field.name, value)
    g = skeleton.graph
    src = model.graph
    g.name = src.name
    g.node.extend(src.node)
    g.input.extend(src.input)
    g.output.extend(src.output)
    if overrides:
        # Annotations computed for the old shapes would contradict the new ones.
        for info in g.input:
            if info.name in overrides:
                info.type.CopyFrom(type_to_proto(overrides[info.name]))
        for info in g.output:
            info.type.tensor_type.ClearField("shape")
    else:
        g.value_info.extend(src.value_info)
    for tensor in src.initializer:
        g.initializer.append(_header_only(tensor))
    types: dict[str, ValueType] = {}
    for info in list(g.value_info) + list(g.input) + list(g.output):
        if info.HasField("type"):
            types[info.name] = type_from_proto(info.type)
    annotated = frozenset(
        info.name for info in list(g.value_info) + list(g.output) if info.HasField("type")
    )
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort; annotations remain
        return types, annotated
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        if info.HasField("type"):
            found = type_from_proto(info.type)
            old = types.get(info.name)
            if old is None or _more_precise(found, old):
                types[info.name] = found
    return types, annotated


def _more_precise(new: ValueType, old: ValueType) -> bool:
    known = lambda t: (  # noqa: E731
        -1
        if not hasattr(t, "shape") or t.shape is None
        else sum(isinstance(d, int) for d in t.shape)
    )
    return known(new) > known(old)


def _header_only(tensor: onnx.TensorProto) -> onnx.TensorProto:
    if (
        tensor.data_location != onnx.TensorProto.EXTERNAL
        and tensor.ByteSize() <= _INFERENCE_DATA_LIMIT
    ):
        return tensor
    header = onnx.TensorProto()
    header.name, header.data_type = tensor.name, tensor.data_type
    header.dims.extend(tensor.dims)
    # Marked external so that inference treats it as present without reading it.
    header.data_location = onnx.TensorProto.EXTERNAL
    entry = header.external_data.add()
    entry.key, entry.value = "location", "__graphopt_skeleton__"
    return header


class _Builder:
    """Builds IR values for one ONNX graph, in a name environment."""

    def __init__(
        self,
        meta: ModelMeta,
        types: dict[str, ValueType],
        annotated: frozenset[str],
        base_dir: str | None,
    ) -> None:
        self.meta = meta
        self.types = types
        self.annotated = annotated
        self.base_dir = base_dir
        self.origin = ModelOrigin()
        self.env: dict[str, Value] = {}
        self.value_names: dict[Value, str] = {}
        self.node_meta: dict[Node, NodeMeta] = {}

    def bind(self, name: str, value: Value) -> None:
        if name in self.env:
            raise ModelLoadError(f"value {name!r} is defined twice")
        self.env[name] = value
        self.value_names.setdefault(value, name)

    def build(self, graph: onnx.GraphProto) -> Graph:
        initializers = {t.name: t for t in graph.initializer}
        overridable = self.meta.ir_version >= 4
        inputs: list[Value] = []
        for info in graph.input:
            if not info.name:
                raise ModelLoadError("a graph input has no name")
            value_type = self.types.get(info.name) or type_from_proto(info.type)
            tensor = initializers.pop(info.name, None)
            if tensor is not None and not overridable:
                # IR < 4 requires every initializer to be an input too: they are constants.
                self.bind(info.name, constant(self._tensor(tensor)))
                continue
            default = self._tensor(tensor) if tensor is not None else None
            value = graph_input(info.name, value_type, default)
            self.bind(info.name, value)
            inputs.append(value)
        for name, tensor in initializers.items():
            self.bind(name, constant(self._tensor(tensor)))
        for node in _topological(graph.node, set(self.env)):
            self._node(node)
        outputs, names = [], []
        for info in graph.output:
            if info.name not in self.env:
                raise ModelLoadError(f"graph output {info.name!r} is never computed")
            outputs.append(self.env[info.name])
            names.append(info.name)
        if len(set(names)) != len(names):
            raise ModelLoadError(f"graph outputs repeat a name: {names}")
        return Graph(
            tuple(inputs), tuple(outputs), tuple(names), self.value_names, self.node_meta, self.meta
        )

    def _tensor(self, proto: onnx.TensorProto) -> TensorData:
        return tensor_from_proto(proto, self.base_dir, self.origin)

    def _node(self, proto: onnx.NodeProto) -> None:
        domain = "" if proto.domain in ("", "ai.onnx") else proto.domain
        _check_arity(proto, domain, self.meta.opset(domain))
        if proto.op_type == "Constant" and domain == "":
            value = constant(self._constant_value(proto))
            if proto.output[0]:
                self.bind(proto.output[0], value)
            return
        known = REGISTRY.is_standard(domain, proto.op_type, self.meta.opset(domain))
        if domain in ("", "ai.onnx.ml") and not known:
            version = self.meta.opset(domain)
            raise UnsupportedModelError(
                f"unsupported op {proto.op_type!r} (domain {domain or 'ai.onnx'}, opset {version})"
            )
        attrs = [attr_from_proto(a, self.base_dir, self.origin) for a in proto.attribute]
        inputs: list[Value | None] = []
        for name in proto.input:
            if not name:
                inputs.append(None)
            elif name not in self.env:
                raise ModelLoadError(f"node {_node_label(proto)} reads undefined {name!r}")
            else:
                inputs.append(self.env[name])
        while inputs and inputs[-1] is None:
            inputs.pop()
        captures = {}
        for _, attr in attrs:
            if attr.kind == "graph":
                subs = [attr.value]
            else:
                subs = attr.value if attr.kind == "graphs" else ()
            for sub in subs:
                for name in sub.captured:
                    if name not in self.env:
                        raise ModelLoadError(
                            f"subgraph of {proto.op_type!r} reads undefined {name!r}"
                        )
                    captures[name] = self.env[name]
        # Random generators and ops we cannot see into must never be merged with a twin
        # (a control-flow node is random when its bodies are).
        unique = (
            proto.op_type in NONDETERMINISTIC_OPS
            or not known
            or self._opaque_body(proto)
            or (domain == "" and proto.op_type == "Dropout" and self._dropout_trains(inputs, attrs))
        )
        out_types = [self.types.get(name, UNKNOWN) if name else UNKNOWN for name in proto.output]
        node = Node.make(
            proto.op_type,
            inputs,
            attrs,
            domain=domain,
            output_types=out_types,
            captures=captures,
            unique=unique,
        )
        self._check_types(proto, node)
        if proto.name or proto.doc_string:
            self.node_meta.setdefault(node, NodeMeta(proto.name, proto.doc_string))
        for name, value in zip(proto.output, node.outputs, strict=True):
            if name:
                self.bind(name, value)

    def _check_types(self, proto: onnx.NodeProto, node: Node) -> None:
        """Check the node's output types against its op's type function.

        Types the model annotates (value_info, declared graph outputs) are only claims: one
        that contradicts what the op computes from its inputs means a broken model, and the
        node is refused (onnxruntime refuses such models too, or runs them with outputs
        that disagree with their declaration). Types from ONNX's own inference are trusted.
        A type function that fails on the node's inputs (shapes that do not broadcast, a
        Reshape target that cannot be) means the model is broken as well.
        """
        suspect = [i for i, name in enumerate(proto.output) if name and name in self.annotated]
        opdef = REGISTRY.lookup(node.domain, node.op)
        if not suspect and (opdef is None or opdef.infer is None):
            return
        name = _node_label(proto)
        opset = self.meta.opset(node.domain)
        try:
            # An annotated output is checked with ONNX's inference too where no hand-written
            # type function answers; otherwise the hand-written one suffices (it is cheap).
            if suspect:
                inferred = REGISTRY.infer(node, opset)
            else:
                inferred = opdef.infer(node, opset)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - a type function's complaint is about the model
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelLoadError(f"node {name}: inconsistent inputs: {first}") from None
        if not inferred:
            return
        for i in suspect:
            if i >= len(inferred) or inferred[i] is None:
                continue
            declared, computed = node.outputs[i].type, inferred[i]
            if not (isinstance(declared, TensorType) and isinstance(computed, TensorType)):
                continue  # sequences, maps, optionals: serialized forms need not agree
            if not declared.compatible_with(computed):
                raise ModelLoadError(
                    f"node {name}: output {proto.output[i]!r} is annotated {declared}, "
                    f"but the node computes {computed}"
                )

    def _dropout_trains(self, inputs: list[Value | None], attrs: list[tuple[str, Attr]]) -> bool:
        is_test = dict(attrs).get("is_test")
        mode = inputs[2] if len(inputs) >= 3 else None
        return dropout_trains(self.meta.opset(""), is_test.value if is_test else 0, mode)

    def _opaque_body(self, proto: onnx.NodeProto) -> bool:
        """Whether a subgraph of ``proto`` (at any depth) holds a random or unknown op."""
        for attr in proto.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                bodies = [attr.g]
            elif attr.type == onnx.AttributeProto.GRAPHS:
                bodies = list(attr.graphs)
            else:
                continue
            for body in bodies:
                for node in body.node:
                    domain = "" if node.domain in ("", "ai.onnx") else node.domain
                    if (
                        node.op_type in NONDETERMINISTIC_OPS
                        or not REGISTRY.is_standard(domain, node.op_type, self.meta.opset(domain))
                        or self._opaque_body(node)
                    ):
                        return True
        return False

    def _constant_value(self, proto: onnx.NodeProto) -> TensorData:
        name = _node_label(proto)
        if len(proto.attribute) != 1:
            raise ModelLoadError(
                f"Constant node {name} has {len(proto.attribute)} attributes, needs exactly one"
            )
        attr = proto.attribute[0]
        expected = _CONSTANT_ATTRS.get(attr.name)
        if expected is None:
            raise ModelLoadError(f"Constant node {name} has unknown attribute {attr.name!r}")
        if attr.type != expected:
            kind = (
                onnx.AttributeProto.AttributeType.Name(attr.type)
                if attr.type in _ATTR_TYPES
                else attr.type
            )
            raise ModelLoadError(
                f"Constant node {name}: attribute {attr.name!r} has type {kind}, "
                f"needs {onnx.AttributeProto.AttributeType.Name(expected)}"
            )
        if attr.name == "value":
            return self._tensor(attr.t)
        if attr.name == "sparse_value":
            return _dense(attr.sparse_tensor, name)
        return tensor_from_proto(_constant_tensor(attr), None, self.origin)


#: The attributes a Constant node may carry, with the type each must have.
_CONSTANT_ATTRS = {
    "value": onnx.AttributeProto.TENSOR,
    "sparse_value": onnx.AttributeProto.SPARSE_TENSOR,
    "value_float": onnx.AttributeProto.FLOAT,
    "value_floats": onnx.AttributeProto.FLOATS,
    "value_int": onnx.AttributeProto.INT,
    "value_ints": onnx.AttributeProto.INTS,
    "value_string": onnx.AttributeProto.STRING,
    "value_strings": onnx.AttributeProto.STRINGS,
}
_ATTR_TYPES = frozenset(onnx.AttributeProto.AttributeType.values())

#: Dense tensors of a sparse Constant larger than this are refused (a corrupted dims field).
_DENSE_LIMIT = 2**31


def _dense(sparse: onnx.SparseTensorProto, node: str) -> TensorData:
    """The dense value of a sparse tensor (zeros, or empty strings, where nothing is given)."""
    what = f"Constant node {node}: sparse_value"
    for part in (sparse.values, sparse.indices):
        if part.data_location == onnx.TensorProto.EXTERNAL:
            raise UnsupportedModelError(f"{what} with external data is not supported")
    values_data = tensor_from_proto(sparse.values, None)  # checks the data fits its dims
    indices_data = tensor_from_proto(sparse.indices, None)
    dims = tuple(int(d) for d in sparse.dims)
    if any(d < 0 for d in dims):
        raise ModelLoadError(f"{what}: negative dimension in shape {list(dims)}")
    total = int(np.prod(dims, dtype=object)) if dims else 1
    if total * max(values_data.dtype.itemsize, 1) > _DENSE_LIMIT:
        raise UnsupportedModelError(f"{what}: dense shape {list(dims)} is too large")
    if not indices_data.dtype.is_integer:
        raise ModelLoadError(
            f"{what}: indices must be integers, not {indices_data.dtype.name.lower()}"
        )
    values = values_data.numpy().reshape(-1)
    indices = indices_data.numpy().astype(np.int64)
    nnz = values.shape[0]
    if indices.shape == (nnz,):  # linearized indices
        coords, bounds = indices.reshape(nnz, 1), np.array([total], np.int64)
    elif indices.shape == (nnz, len(dims)):  # [NNZ, rank] coordinates
        coords, bounds = indices, np.array(dims, np.int64)
    else:
        coords = bounds = None
    if coords is None or (coords.size and ((coords < 0).any() or (coords >= bounds).any())):
        raise ModelLoadError(
            f"{what}: indices {list(indices.shape)} do not fit {nnz} values in shape {list(dims)}"
        )
    dense = np.zeros(dims, dtype=values.dtype)
    if values.dtype == object:
        dense[...] = b""
    if indices.shape == (nnz,):
        dense.reshape(-1)[indices] = values
    else:
        dense[tuple(indices.T)] = values
    return TensorData.from_array(dense, values_data.dtype)


def _constant_tensor(attr: onnx.AttributeProto) -> onnx.TensorProto:
    """The tensor of a Constant's value_float(s)/value_int(s)/value_string(s) attribute."""
    tensor = onnx.TensorProto()
    name = attr.name
    if name in ("value_float", "value_floats"):
        tensor.data_type = onnx.TensorProto.FLOAT
        tensor.float_data.extend([attr.f] if name == "value_float" else attr.floats)
    elif name in ("value_int", "value_ints"):
        tensor.data_type = onnx.TensorProto.INT64
        tensor.int64_data.extend([attr.i] if name == "value_int" else attr.ints)
    else:
        tensor.data_type = onnx.TensorProto.STRING
        tensor.string_data.extend([attr.s] if name == "value_string" else attr.strings)
    if name.endswith("s"):  # a list: 1-D; a single value: a scalar
        count = {"value_floats": attr.floats, "value_ints": attr.ints}.get(name, attr.strings)
        tensor.dims.append(len(count))
    return tensor


def _node_label(proto: onnx.NodeProto) -> str:
    """How error messages name a node: 'name' (Op)."""
    return f"{proto.name!r} ({proto.op_type})" if proto.name else f"({proto.op_type})"


def _schema(op: str, opset: int | None, domain: str) -> onnx.defs.OpSchema | None:
    """The schema that validates a node's arity (standard domains only)."""
    return schema_of(domain, op, opset) if domain in ("", "ai.onnx.ml") else None


def _check_arity(proto: onnx.NodeProto, domain: str, opset: int | None) -> None:
    """Refuse a node whose input or output count its ONNX schema does not allow."""
    schema = _schema(proto.op_type, opset, domain)
    if schema is None:
        return
    name = _node_label(proto)
    for kind, names, low, high in (
        ("inputs", proto.input, schema.min_input, schema.max_input),
        ("outputs", proto.output, schema.min_output, schema.max_output),
    ):
        count = len(names)
        if low <= count <= high:
            continue
        if low == high:
            needs = f"needs {low}"
        elif count < low:
            needs = f"needs at least {low}"
        else:
            needs = f"takes at most {high}"
        noun = kind if count != 1 else kind[:-1]
        raise ModelLoadError(f"node {name} has {count} {noun}, {needs}")
    # A required input may not be left out with an empty name either.
    single = onnx.defs.OpSchema.FormalParameterOption.Single
    for index, formal in enumerate(schema.inputs):
        if formal.option == single and index < len(proto.input) and not proto.input[index]:
            raise ModelLoadError(f"node {name} leaves out its required input {formal.name!r}")


_STRING_FIELD = FieldDescriptor.TYPE_STRING
#: TensorProto fields that hold data: never read while checking text (it would copy weights).
_TENSOR_DATA = frozenset(
    {
        "raw_data",
        "float_data",
        "int32_data",
        "string_data",
        "int64_data",
        "double_data",
        "uint64_data",
    }
)
_TENSOR_TEXT_FIELDS = tuple(
    f for f in onnx.TensorProto.DESCRIPTOR.fields if f.name not in _TENSOR_DATA
)


def _check_text(message: Message, path: str) -> None:
    """Refuse text fields (names, op types, domains, ...) that are not valid UTF-8.

    protobuf hands such a field back as ``bytes`` instead of ``str``; every name the
    importer compares or sorts must be text, so the model is refused here, naming where.
    """
    if isinstance(message, onnx.TensorProto):  # an unset message field reads as empty
        fields = [(field, getattr(message, field.name)) for field in _TENSOR_TEXT_FIELDS]
    else:
        fields = message.ListFields()
    for field, value in fields:
        where = f"{path}.{field.name}"
        if field.type == _STRING_FIELD:
            items = value if _is_repeated(field) else (value,)
            for i, item in enumerate(items):
                if not isinstance(item, str):
                    at = f"{where}[{i}]" if _is_repeated(field) else where
                    raise ModelLoadError(
                        f"{_describe(message, at)} is not valid UTF-8: {item[:40]!r}"
                    )
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if _is_repeated(field):
                for i, item in enumerate(value):
                    _check_text(item, f"{where}[{i}]")
            else:
                _check_text(value, where)


def _describe(message: Message, path: str) -> str:
    if isinstance(message, onnx.NodeProto) and isinstance(message.op_type, str):
        return f"{path} (a {message.op_type} node)"
    return path


def _topological(nodes: Iterable[onnx.NodeProto], bound: set[str]) -> list[onnx.NodeProto]:
    """The nodes in an order where every input is computed first.

    ONNX requires sorted graphs but some exporters do not comply. A sorted graph
    takes one pass; names read only inside subgraphs count as inputs too.
    """
    pending = [(node, set(node.input) | _subgraph_reads(node)) for node in nodes]
    available = set(bound) | {""}
    ordered: list[onnx.NodeProto] = []
    while pending:
        waiting = []
        for node, needs in pending:
            if needs <= available:
                ordered.append(node)
                available.update(node.output)
            else:
                waiting.append((node, needs))
        if len(waiting) == len(pending):
            node, needs = waiting[0]
            missing = sorted(needs - available)
            name = node.name or node.op_type
            raise ModelLoadError(
                f"node {name!r} reads {missing[0]!r}, which nothing defines (or a cycle)"
            )
        pending = waiting
    return ordered


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    reads: set[str] = set()
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            reads.update(subgraph_from_proto(attr.g).captured)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            for sub in attr.graphs:
                reads.update(subgraph_from_proto(sub).captured)
    return reads


def base_dir_of(path: str | os.PathLike) -> str:
    """The folder a model file's external data is relative to."""
    return os.path.dirname(os.path.abspath(path))
