"""ONNX ModelProto -> IR Graph."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import onnx

from optimizer.errors import ModelLoadError, ShapeError, UnsupportedModelError
from optimizer.ir import (
    REGISTRY,
    UNKNOWN,
    Attr,
    DType,
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
from optimizer.onnx_io.types import (
    attr_from_proto,
    subgraph_from_proto,
    tensor_from_proto,
    type_from_proto,
    type_to_proto,
)

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
    types = _inferred_types(model, overrides)
    builder = _Builder(meta, types, base_dir)
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
) -> dict[str, ValueType]:
    """Types of every named value, from the model's own annotations and ONNX shape inference.

    Inference runs on a skeleton whose large initializers carry no data, so it
    neither copies weights nor trips over protobuf's 2 GB limit.
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
    try:
        inferred = onnx.shape_inference.infer_shapes(skeleton, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort; annotations remain
        return types
    for info in list(inferred.graph.value_info) + list(inferred.graph.output):
        if info.HasField("type"):
            found = type_from_proto(info.type)
            old = types.get(info.name)
            if old is None or _more_precise(found, old):
                types[info.name] = found
    return types


def _more_precise(new: ValueType, old: ValueType) -> bool:
    known = lambda t: (  # noqa: E731
        -1 if not hasattr(t, "shape") or t.shape is None else sum(isinstance(d, int) for d in t.shape)
    )
    return known(new) > known(old)


def _header_only(tensor: onnx.TensorProto) -> onnx.TensorProto:
    if tensor.data_location != onnx.TensorProto.EXTERNAL and tensor.ByteSize() <= _INFERENCE_DATA_LIMIT:
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

    def __init__(self, meta: ModelMeta, types: dict[str, ValueType], base_dir: str | None) -> None:
        self.meta = meta
        self.types = types
        self.base_dir = base_dir
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
        return Graph(tuple(inputs), tuple(outputs), tuple(names), self.value_names, self.node_meta, self.meta)

    def _tensor(self, proto: onnx.TensorProto) -> TensorData:
        return tensor_from_proto(proto, self.base_dir)

    def _node(self, proto: onnx.NodeProto) -> None:
        domain = "" if proto.domain in ("", "ai.onnx") else proto.domain
        if proto.op_type == "Constant" and domain == "":
            self.bind(proto.output[0], constant(self._constant_value(proto)))
            return
        known = REGISTRY.is_standard(domain, proto.op_type, self.meta.opset(domain))
        if domain in ("", "ai.onnx.ml") and not known:
            version = self.meta.opset(domain)
            raise UnsupportedModelError(
                f"unsupported op {proto.op_type!r} (domain {domain or 'ai.onnx'}, opset {version})"
            )
        attrs = [attr_from_proto(a, self.base_dir) for a in proto.attribute]
        inputs: list[Value | None] = []
        for name in proto.input:
            if not name:
                inputs.append(None)
            elif name not in self.env:
                raise ModelLoadError(f"node {proto.name or proto.op_type!r} reads undefined {name!r}")
            else:
                inputs.append(self.env[name])
        while inputs and inputs[-1] is None:
            inputs.pop()
        captures = {}
        for _, attr in attrs:
            subs = [attr.value] if attr.kind == "graph" else attr.value if attr.kind == "graphs" else ()
            for sub in subs:
                for name in sub.captured:
                    if name not in self.env:
                        raise ModelLoadError(f"subgraph of {proto.op_type!r} reads undefined {name!r}")
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
        if proto.name or proto.doc_string:
            self.node_meta.setdefault(node, NodeMeta(proto.name, proto.doc_string))
        for name, value in zip(proto.output, node.outputs):
            if name:
                self.bind(name, value)

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
        attr = proto.attribute[0] if len(proto.attribute) == 1 else None
        if attr is None:
            raise ModelLoadError(f"Constant node {proto.name!r} needs exactly one attribute")
        if attr.name == "value":
            return self._tensor(attr.t)
        if attr.name == "sparse_value":
            return _dense(attr.sparse_tensor)
        return tensor_from_proto(_constant_tensor(proto), None)


def _dense(sparse: onnx.SparseTensorProto) -> TensorData:
    """The dense value of a sparse tensor (zeros, or empty strings, where nothing is given)."""
    values = onnx.numpy_helper.to_array(sparse.values).reshape(-1)
    indices = onnx.numpy_helper.to_array(sparse.indices).astype(np.int64)
    dims = tuple(int(d) for d in sparse.dims)
    dense = np.zeros(dims, dtype=values.dtype)
    if values.dtype == object:
        dense[...] = b""
    if indices.ndim == 1:  # linearized indices
        dense.reshape(-1)[indices] = values
    else:  # [NNZ, rank] coordinates
        dense[tuple(indices.T)] = values
    return TensorData.from_array(dense, DType(sparse.values.data_type))


def _constant_tensor(proto: onnx.NodeProto) -> onnx.TensorProto:
    """Evaluate a Constant node with a value_float(s)/value_int(s)/value_string(s) attribute."""
    from onnx.reference import ReferenceEvaluator

    model = onnx.helper.make_model(
        onnx.helper.make_graph([proto], "c", [], [onnx.helper.make_tensor_value_info(proto.output[0], 0, None)])
    )
    (array,) = ReferenceEvaluator(model).run(None, {})
    return onnx.numpy_helper.from_array(array)


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
            raise ModelLoadError(f"node {name!r} reads {missing[0]!r}, which nothing defines (or a cycle)")
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
