"""IR Graph -> ONNX ModelProto.

Names are kept wherever they still denote the same value; unchanged weights
are written as references to where they already lie (see
:func:`optimizer.onnx_io.types.tensor_to_proto`), so exporting copies no weight.
"""

from __future__ import annotations

import itertools

import onnx

from optimizer.ir import Graph, Node, OpaqueType, TensorType, Value
from optimizer.onnx_io.types import attr_to_proto, tensor_to_proto, type_from_proto, type_to_proto


class _Namer:
    """Assigns each exported value a unique name, preferring its original one."""

    def __init__(self, reserved: set[str]) -> None:
        self.taken = set(reserved)
        self.names: dict[Value, str] = {}
        self._counter = itertools.count()

    def claim(self, value: Value, name: str) -> bool:
        if value in self.names or name in self.taken or not name:
            return False
        self.names[value] = name
        self.taken.add(name)
        return True

    def fresh(self, stem: str) -> str:
        while True:
            name = f"{stem}_{next(self._counter)}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    def name_of(self, value: Value, preferred: str | None) -> str:
        if value not in self.names and not (preferred and self.claim(value, preferred)):
            self.names[value] = self.fresh(f"{value.node.op.lower()}_out{value.index}")
        return self.names[value]


def export_model(graph: Graph) -> onnx.ModelProto:
    """Build the ONNX model for ``graph``.

    Constants become initializers (also listed as inputs for IR version < 4);
    a graph output that is another input, or another output's value, gets an
    Identity node so that every output name is bound exactly once (a constant
    output is the initializer of that name).
    """
    meta = graph.meta
    nodes = graph.nodes()
    reserved: set[str] = set(graph.output_names)
    reserved.update(v.input_name for v in graph.inputs)
    captured: dict[Value, set[str]] = {}
    for node in nodes:
        for _, attr in node.attrs:
            subs = (
                [attr.value]
                if attr.kind == "graph"
                else attr.value
                if attr.kind == "graphs"
                else ()
            )
            for sub in subs:
                reserved.update(sub.defined)
        for name, value in node.captures:
            captured.setdefault(value, set()).add(name)
            reserved.add(name)
    namer = _Namer(set())
    for value in graph.inputs:
        namer.claim(value, value.input_name)
    out_identity: list[tuple[Value, str]] = []
    for value, name in zip(graph.outputs, graph.output_names):
        if value.node.is_input and namer.names.get(value) == name:
            continue  # the graph input is itself the output
        if value.node.is_input or not namer.claim(value, name):
            out_identity.append((value, name))
    for value, names in captured.items():
        for name in sorted(names):
            if namer.claim(value, name):
                break
    namer.taken |= reserved
    rebind = {value: set(wanted) for value, wanted in captured.items()}
    for value, name in out_identity:
        rebind.setdefault(value, set()).add(name)
    names = graph.value_names
    used = set(graph.outputs) | {v for node in nodes for v in node.operands}

    proto_nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    for node in graph.nodes(include_sources=True):
        if node.is_constant:
            value = node.outputs[0]
            initializers.append(
                tensor_to_proto(node.attr("value"), namer.name_of(value, names.get(value)))
            )
        elif not node.is_input:
            proto_nodes.append(_node_proto(node, namer, names, graph, used))
        # Captured outer values whose name had to change, and outputs that could not take
        # their value's name, are re-bound by an Identity right after the value's definition
        # (the graph must stay topologically sorted; a name shared by both is bound once).
        for value in node.outputs:
            for name in sorted(rebind.get(value, set()) - {namer.names.get(value)}):
                proto_nodes.append(onnx.helper.make_node("Identity", [namer.names[value]], [name]))

    io_types = dict(meta.io_types)
    inputs = []
    for value in graph.inputs:
        name = value.input_name
        inputs.append(_value_info(name, value, io_types))
        default = value.node.attr("default")
        if default is not None:
            initializers.append(tensor_to_proto(default, name))
    if meta.ir_version < 4:
        input_names = {i.name for i in inputs}
        for tensor in initializers:
            if tensor.name not in input_names:
                info = onnx.helper.make_tensor_value_info(
                    tensor.name, tensor.data_type, list(tensor.dims)
                )
                inputs.append(info)
    declared = dict(meta.output_types)
    outputs = [
        _output_info(name, value, io_types, declared.get(name))
        for value, name in zip(graph.outputs, graph.output_names)
    ]
    value_info = [
        _value_info(name, value, io_types)
        for value, name in namer.names.items()
        if name in meta.value_info_names
        and not value.node.is_source
        and not _unknown(value)
        and name not in graph.output_names
    ]
    onnx_graph = onnx.helper.make_graph(
        proto_nodes,
        meta.graph_name,
        inputs,
        outputs,
        initializer=initializers,
        doc_string=meta.graph_doc_string or None,
        value_info=value_info,
    )
    model = onnx.ModelProto()
    model.ir_version = meta.ir_version
    model.graph.CopyFrom(onnx_graph)
    for domain, version in meta.opset_imports:
        model.opset_import.add(domain=domain, version=version)
    model.producer_name = meta.producer_name
    model.producer_version = meta.producer_version
    model.domain = meta.domain
    model.model_version = meta.model_version
    model.doc_string = meta.doc_string
    for key, value in meta.metadata_props:
        model.metadata_props.add(key=key, value=value)
    _restore_passthrough(model, meta.passthrough)
    return model


def _unknown(value: Value) -> bool:
    return not isinstance(value.type, OpaqueType) and value.type.dtype == 0


def _value_info(name: str, value: Value, io_types: dict[str, bytes]) -> onnx.ValueInfoProto:
    info = onnx.ValueInfoProto()
    info.name = name
    if name in io_types:
        info.type.ParseFromString(io_types[name])
    elif not _unknown(value):
        info.type.CopyFrom(type_to_proto(value.type))
    return info


def _output_info(
    name: str, value: Value, io_types: dict[str, bytes], declared: bytes | None
) -> onnx.ValueInfoProto:
    """A graph output's value_info: the value's type, or the source model's declaration when
    that says more (a bypassed Identity may have been typed better than what it copied).

    A tensor type of unknown rank is invalid on a main-graph output (the checker requires a
    shape), so such a value keeps the declaration even when that is an empty type."""
    info = _value_info(name, value, io_types)
    if declared is None or name in io_types:
        return info
    before = type_from_proto(_parse_type(declared))
    after = value.type
    unranked = isinstance(after, TensorType) and (after.shape is None or _unknown(value))
    if unranked or _known_dims(before) > _known_dims(after):
        info.type.ParseFromString(declared)
    return info


def _parse_type(data: bytes) -> onnx.TypeProto:
    proto = onnx.TypeProto()
    proto.ParseFromString(data)
    return proto


def _known_dims(value_type) -> int:
    if not isinstance(value_type, TensorType) or value_type.shape is None:
        return -1
    return sum(isinstance(d, int) for d in value_type.shape)


def _node_proto(node: Node, namer: _Namer, names, graph: Graph, used: set[Value]) -> onnx.NodeProto:
    inputs = ["" if v is None else namer.name_of(v, names.get(v)) for v in node.inputs]
    # An optional output nobody reads and nobody named stays omitted: for some ops
    # (BatchNormalization before opset 14) its mere presence changes the semantics.
    outputs = [
        namer.name_of(v, names.get(v)) if v in used or v in names else "" for v in node.outputs
    ]
    while outputs and not outputs[-1]:
        outputs.pop()
    meta = graph.node_meta.get(node)
    proto = onnx.helper.make_node(
        node.op,
        inputs,
        outputs,
        name=meta.name if meta and meta.name else None,
        doc_string=meta.doc_string if meta and meta.doc_string else None,
        domain=node.domain or None,
    )
    proto.attribute.extend(attr_to_proto(k, a) for k, a in node.attrs)
    return proto


def _restore_passthrough(model: onnx.ModelProto, kept: tuple[tuple[str, bytes], ...]) -> None:
    for kind, data in kept:
        if kind == "function":
            model.functions.add().ParseFromString(data)
        elif kind == "training_info":
            model.training_info.add().ParseFromString(data)
        elif kind == "graph_metadata":
            model.graph.metadata_props.add().ParseFromString(data)
        elif kind == "quantization_annotation":
            model.graph.quantization_annotation.add().ParseFromString(data)
