"""The typed SSA graph: :class:`Value`, :class:`Node`, :class:`Graph`.

Nodes are immutable and hash-consed: building a node that is structurally
equal to a live one (same op, attributes, inputs and output types) returns the
existing object. Equality is therefore identity, two graphs are equal when
their output values are the same objects, and common-subexpression
elimination happens as a graph is built. Nodes whose results must stay
distinct (random generators, unknown custom ops, bodies containing either) get a unique
token so they are never merged.

Because a node can only refer to values that exist when it is built, a graph
cannot contain a cycle and every value is bound exactly once.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from optimizer.ir.tensor import TensorData
from optimizer.ir.types import UNKNOWN, ValueType

#: Domain of the IR's own source nodes (graph inputs and constants).
IR_DOMAIN = "graphopt.ir"
INPUT_OP = "Input"
CONSTANT_OP = "Constant"


@dataclass(frozen=True)
class Subgraph:
    """A control-flow body (If/Loop/Scan attribute), carried through in serialized form.

    ``captured`` names the outer-scope values the body reads; the owning node
    lists them as :attr:`Node.captures` so that they stay alive and keep their
    names on export. ``defined`` are names bound inside, which the exporter
    must not reuse for outer values.
    """

    encoded: bytes
    captured: tuple[str, ...] = ()
    defined: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Attr:
    """A typed attribute value.

    ``kind`` is one of int, float, string, tensor, graph, ints, floats,
    strings, tensors, graphs, or ``opaque:<kind>`` for kinds carried as bytes
    (sparse tensors, type protos). Strings are ``bytes`` as in ONNX.
    """

    kind: str
    value: Any

    @staticmethod
    def infer(value: Any) -> Attr:
        """Build an attribute from a plain Python value (int, float, str, list, TensorData)."""
        if isinstance(value, Attr):
            return value
        if isinstance(value, bool):
            return Attr("int", int(value))
        if isinstance(value, int):
            return Attr("int", value)
        if isinstance(value, float):
            return Attr("float", value)
        if isinstance(value, str):
            return Attr("string", value.encode())
        if isinstance(value, bytes):
            return Attr("string", value)
        if isinstance(value, TensorData):
            return Attr("tensor", value)
        if isinstance(value, Subgraph):
            return Attr("graph", value)
        if isinstance(value, (list, tuple)):
            items = tuple(value)
            if all(isinstance(v, (int, bool)) for v in items):
                return Attr("ints", tuple(int(v) for v in items))
            if all(isinstance(v, (int, float)) for v in items):
                return Attr("floats", tuple(float(v) for v in items))
            if all(isinstance(v, (str, bytes)) for v in items):
                return Attr(
                    "strings", tuple(v.encode() if isinstance(v, str) else v for v in items)
                )
            if all(isinstance(v, TensorData) for v in items):
                return Attr("tensors", items)
        raise TypeError(f"cannot infer an attribute kind for {value!r}")


class Value:
    """One output of a node: the SSA variable. Typed; equality is identity."""

    __slots__ = ("node", "index", "type", "__weakref__")

    def __init__(self, node: Node, index: int, type: ValueType) -> None:
        self.node = node
        self.index = index
        self.type = type

    @property
    def is_constant(self) -> bool:
        """True when the value is a constant tensor."""
        return self.node.is_constant

    @property
    def input_name(self) -> str:
        """The name of a graph input (raises for other values)."""
        if not self.node.is_input:
            raise ValueError(f"{self!r} is not a graph input")
        return self.node.attr("name").decode()

    @property
    def constant(self) -> TensorData | None:
        """The constant's data, or None when the value is not a constant."""
        return self.node.attrs_dict["value"].value if self.node.is_constant else None

    def __repr__(self) -> str:
        return f"%{self.node.op}#{self.node.serial}:{self.index}<{self.type}>"


_INTERN: weakref.WeakValueDictionary[tuple, Node] = weakref.WeakValueDictionary()
_INTERN_LOCK = threading.Lock()
_VALUES_LOCK = threading.Lock()
_SERIALS = itertools.count()


class Node:
    """An operation: (op, domain, attributes, inputs, captures, output types [, unique token]).

    Build nodes with :meth:`Node.make`; the constructor is private to keep
    hash-consing sound. ``inputs`` may hold ``None`` for an omitted optional
    input (ONNX's empty name).
    """

    __slots__ = (
        "op",
        "domain",
        "attrs",
        "inputs",
        "captures",
        "output_types",
        "_refs",
        "unique",
        "serial",
        "_attrs_dict",
        "__weakref__",
    )

    op: str
    domain: str
    attrs: tuple[tuple[str, Attr], ...]
    inputs: tuple[Value | None, ...]
    captures: tuple[tuple[str, Value], ...]
    output_types: tuple[ValueType, ...]
    unique: int | None
    serial: int

    @classmethod
    def make(
        cls,
        op: str,
        inputs: Sequence[Value | None] = (),
        attrs: Mapping[str, Any] | Iterable[tuple[str, Any]] = (),
        *,
        domain: str = "",
        output_types: Sequence[ValueType] = (UNKNOWN,),
        captures: Mapping[str, Value] | Iterable[tuple[str, Value]] = (),
        unique: bool = False,
    ) -> Node:
        """Return the node with this structure, creating it if no equal node is alive.

        ``unique=True`` makes a node that is never merged with another.
        """
        items = attrs.items() if isinstance(attrs, Mapping) else attrs
        frozen_attrs = tuple(sorted((k, Attr.infer(v)) for k, v in items))
        cap_items = captures.items() if isinstance(captures, Mapping) else captures
        frozen_caps = tuple(sorted(cap_items, key=lambda kv: kv[0]))
        ins = tuple(inputs)
        types = tuple(output_types)
        token = next(_SERIALS) if unique else None
        # Inputs enter the key by identity: a live node keeps its inputs alive, so their ids
        # are stable, and the table then holds no strong reference that would keep a dead
        # graph's upstream nodes alive for one garbage collection per level of depth.
        key = (
            op,
            domain,
            frozen_attrs,
            tuple(map(id, ins)),
            tuple((n, id(v)) for n, v in frozen_caps),
            types,
            token,
        )
        with _INTERN_LOCK:
            existing = _INTERN.get(key)
            if existing is not None:
                return existing
            node = object.__new__(cls)
            node.op = op
            node.domain = domain
            node.attrs = frozen_attrs
            node.inputs = ins
            node.captures = frozen_caps
            node.unique = token
            node.serial = next(_SERIALS)
            node._attrs_dict = None
            node.output_types = types
            node._refs = ()
            _INTERN[key] = node
            return node

    def __init__(self) -> None:  # pragma: no cover - guarded
        raise TypeError("use Node.make(...)")

    @property
    def outputs(self) -> tuple[Value, ...]:
        """The node's results, one :class:`Value` per output type.

        A node holds its values weakly while each value holds its node strongly, so that
        nodes and values form no reference cycle: a dropped graph is freed by reference
        counting at once. With a strong reference both ways every node was a cycle, and
        the garbage collector's full passes over the millions of nodes a search leaves
        took a third of TASO's search time and stalled the next search for seconds. A value
        that nothing holds is made again on the next access; nothing can tell it from the
        dropped one, since nothing kept it.
        """
        values = tuple([ref() for ref in self._refs])
        if len(values) == len(self.output_types) and None not in values:
            return values
        with _VALUES_LOCK:  # two threads must not make two values for one output
            held = [ref() for ref in self._refs] or [None] * len(self.output_types)
            values = tuple(
                Value(self, i, t) if v is None else v
                for i, (v, t) in enumerate(zip(held, self.output_types))
            )
            self._refs = tuple(weakref.ref(v) for v in values)
        return values

    @property
    def attrs_dict(self) -> dict[str, Attr]:
        """Attributes by name."""
        if self._attrs_dict is None:
            self._attrs_dict = dict(self.attrs)
        return self._attrs_dict

    def attr(self, name: str, default: Any = None) -> Any:
        """The plain value of attribute ``name`` (``default`` when absent)."""
        found = self.attrs_dict.get(name)
        return default if found is None else found.value

    @property
    def operands(self) -> tuple[Value, ...]:
        """Every value the node reads: present inputs, then captured outer values."""
        return tuple(v for v in self.inputs if v is not None) + tuple(v for _, v in self.captures)

    @property
    def is_input(self) -> bool:
        """True for a graph-input source node."""
        return self.domain == IR_DOMAIN and self.op == INPUT_OP

    @property
    def is_constant(self) -> bool:
        """True for a constant source node."""
        return self.domain == IR_DOMAIN and self.op == CONSTANT_OP

    @property
    def is_source(self) -> bool:
        """True for nodes without inputs that the IR itself defines."""
        return self.domain == IR_DOMAIN

    @property
    def output(self) -> Value:
        """The single output (raises for multi-output nodes)."""
        outputs = self.outputs
        if len(outputs) != 1:
            raise ValueError(f"{self.op} has {len(outputs)} outputs")
        return outputs[0]

    def with_inputs(
        self, inputs: Sequence[Value | None], captures: Mapping[str, Value] | None = None
    ) -> Node:
        """The same operation applied to other inputs (output types kept)."""
        caps = self.captures if captures is None else tuple(captures.items())
        return Node.make(
            self.op,
            inputs,
            self.attrs,
            domain=self.domain,
            output_types=self.output_types,
            captures=caps,
            unique=self.unique is not None,
        )

    def __repr__(self) -> str:
        dom = f"{self.domain}::" if self.domain else ""
        return f"Node({dom}{self.op}#{self.serial})"


def graph_input(name: str, type: ValueType, default: TensorData | None = None) -> Value:
    """The value of a graph input called ``name`` (``default``: an overridable initializer)."""
    attrs: dict[str, Any] = {"name": name}
    if default is not None:
        attrs["default"] = default
    return Node.make(INPUT_OP, (), attrs, domain=IR_DOMAIN, output_types=(type,)).outputs[0]


def constant(data: TensorData) -> Value:
    """The value of a constant tensor (hash-consed by content)."""
    node = Node.make(CONSTANT_OP, (), {"value": data}, domain=IR_DOMAIN, output_types=(data.type,))
    return node.outputs[0]


@dataclass(frozen=True)
class NodeMeta:
    """What a node carries besides its structure: ONNX name, doc string, provenance."""

    name: str = ""
    doc_string: str = ""
    provenance: str = ""


@dataclass(frozen=True)
class ModelMeta:
    """Model-level data carried through unchanged (opsets, producer, metadata, functions)."""

    ir_version: int = 8
    opset_imports: tuple[tuple[str, int], ...] = (("", 17),)
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    graph_name: str = "graph"
    graph_doc_string: str = ""
    metadata_props: tuple[tuple[str, str], ...] = ()
    #: Pieces kept as serialized protobuf (functions, training info, sparse initializers ...).
    passthrough: tuple[tuple[str, bytes], ...] = ()
    #: Names that had value_info entries in the source model.
    value_info_names: frozenset[str] = frozenset()
    #: Full source types of graph inputs/outputs that the IR types cannot express.
    io_types: tuple[tuple[str, bytes], ...] = ()
    #: Declared tensor types of the source graph's outputs (serialized TypeProtos), kept for
    #: outputs whose value a pass replaced by a less precisely typed one.
    output_types: tuple[tuple[str, bytes], ...] = ()

    def opset(self, domain: str = "") -> int | None:
        """The imported version of ``domain`` ("" and "ai.onnx" are the same), or None."""
        aliases = {"", "ai.onnx"} if domain in ("", "ai.onnx") else {domain}
        for d, v in self.opset_imports:
            if d in aliases:
                return v
        return None


@dataclass(frozen=True, eq=False)
class Graph:
    """A whole model: inputs, named outputs, and side tables that are not structure.

    The node set is whatever the outputs reach; unreachable nodes simply are
    not part of the graph (dead-code elimination is free).
    """

    inputs: tuple[Value, ...]
    outputs: tuple[Value, ...]
    output_names: tuple[str, ...]
    value_names: Mapping[Value, str] = field(default_factory=dict)
    node_meta: Mapping[Node, NodeMeta] = field(default_factory=dict)
    meta: ModelMeta = field(default_factory=ModelMeta)

    @property
    def key(self) -> tuple:
        """Structural identity: equal keys mean the same computation."""
        return (self.inputs, self.outputs, self.output_names)

    def nodes(self, *, include_sources: bool = False) -> list[Node]:
        """Reachable nodes in a deterministic topological order."""
        order: list[Node] = []
        seen: set[int] = set()
        for out in self.outputs:
            stack: list[tuple[Node, Iterator[Value]]] = []
            if id(out.node) in seen:
                continue
            seen.add(id(out.node))
            stack.append((out.node, iter(out.node.operands)))
            while stack:
                node, pending = stack[-1]
                for operand in pending:
                    if id(operand.node) not in seen:
                        seen.add(id(operand.node))
                        stack.append((operand.node, iter(operand.node.operands)))
                        break
                else:
                    stack.pop()
                    if include_sources or not node.is_source:
                        order.append(node)
        return order

    def constants(self) -> list[Value]:
        """Constant values the graph uses, in topological order."""
        return [n.outputs[0] for n in self.nodes(include_sources=True) if n.is_constant]

    def consumers(self) -> dict[Value, list[Node]]:
        """For each value, the nodes that read it."""
        users: dict[Value, list[Node]] = {}
        for node in self.nodes():
            for operand in node.operands:
                users.setdefault(operand, []).append(node)
        return users

    def with_outputs(self, outputs: Sequence[Value], **changes: Any) -> Graph:
        """A copy with other output values (names and side tables kept)."""
        return replace(self, outputs=tuple(outputs), **changes)

    def check(self) -> None:
        """Raise :class:`IRCheckError` listing every broken invariant (see :func:`check_graph`)."""
        problems = check_graph(self)
        if problems:
            raise IRCheckError("; ".join(problems[:10]) + (" ..." if len(problems) > 10 else ""))


class IRCheckError(AssertionError):
    """A graph violates an IR invariant; this is a bug in graphopt, never user error."""


def check_graph(graph: Graph) -> list[str]:
    """Validate a graph and return its problems (empty when sound).

    Checks that inputs are input nodes with unique names, outputs are named
    uniquely, every value read is bound by a graph input, a constant or a node
    of the graph, constants match their data, and every registered op's type
    function reproduces the node's output types.
    """
    from optimizer.ir.ops import REGISTRY  # the registry imports this module

    problems: list[str] = []
    input_nodes = set()
    names = [v.input_name for v in graph.inputs if v.node.is_input]
    for value in graph.inputs:
        if not value.node.is_input:
            problems.append(f"graph input {value!r} is not an input node")
        input_nodes.add(value.node)
    if len(set(names)) != len(names):
        problems.append(f"duplicate graph input names {sorted(names)}")
    if len(graph.output_names) != len(graph.outputs):
        problems.append("output names and outputs differ in number")
    if len(set(graph.output_names)) != len(graph.output_names) or "" in graph.output_names:
        problems.append(f"output names must be unique and non-empty: {graph.output_names}")
    for node in graph.nodes(include_sources=True):
        if node.is_input:
            if node not in input_nodes:
                problems.append(
                    f"value of input {node.outputs[0].input_name!r} is not a graph input"
                )
            continue
        if node.is_constant:
            data = node.attr("value")
            if node.outputs[0].type != data.type:
                problems.append(f"constant {node!r} typed {node.outputs[0].type}, data {data.type}")
            continue
        for name, value in node.captures:
            if value is None:
                problems.append(f"{node!r} captures unbound {name!r}")
        opdef = REGISTRY.lookup(node.domain, node.op)
        if opdef is None or opdef.infer is None:
            continue
        version = graph.meta.opset(node.domain)
        try:
            inferred = opdef.infer(node, version)
        except Exception as exc:  # noqa: BLE001 - a crashing type function is itself a finding
            problems.append(f"{node!r}: type function failed: {exc}")
            continue
        if inferred is None:
            continue
        if len(inferred) < len(node.outputs):
            problems.append(f"{node!r}: type function gives {len(inferred)} outputs")
            continue
        for value, want in zip(node.outputs, inferred):
            if not value.type.compatible_with(want):
                problems.append(f"{node!r} output {value.index}: typed {value.type}, infers {want}")
    return problems


def transform(
    graph: Graph,
    rewrite: Callable[[Node, list[Value | None]], Sequence[Value] | None],
    *,
    provenance: str = "",
) -> Graph:
    """Rebuild ``graph`` bottom-up, letting ``rewrite`` replace nodes.

    ``rewrite(node, new_inputs)`` sees each node with its inputs already
    rewritten and returns the values that replace the node's outputs, or None
    to keep the node (rebuilt over the new inputs). Names and metadata follow
    the values they belong to; nodes that a rewrite creates get ``provenance``.
    """
    mapping: dict[Value, Value] = {v: v for v in graph.inputs}
    meta = dict(graph.node_meta)
    for node in graph.nodes(include_sources=True):
        if node.is_source:
            mapping.setdefault(node.outputs[0], node.outputs[0])
            continue
        new_inputs = [None if v is None else mapping[v] for v in node.inputs]
        new_caps = {name: mapping[v] for name, v in node.captures}
        replaced = rewrite(node, new_inputs)
        if replaced is None:
            same = all(a is b for a, b in zip(new_inputs, node.inputs)) and all(
                new_caps[n] is v for n, v in node.captures
            )
            rebuilt = node if same else node.with_inputs(new_inputs, new_caps)
            if rebuilt is not node and rebuilt not in meta and node in meta:
                meta[rebuilt] = meta[node]
            replaced = rebuilt.outputs
        elif provenance:
            for value in replaced:
                if not value.node.is_source and value.node not in meta:
                    meta[value.node] = NodeMeta(provenance=provenance)
        for old, new in zip(node.outputs, replaced):
            mapping[old] = new
    return rename_after(graph, mapping, meta)


def rename_after(
    graph: Graph, mapping: Mapping[Value, Value], meta: Mapping[Node, NodeMeta]
) -> Graph:
    """The graph whose outputs are ``mapping``'s images, names moved to the new values."""
    names: dict[Value, str] = {}
    for old, name in graph.value_names.items():
        new = mapping.get(old, old)
        if new is old:
            names[new] = name
    for old, name in graph.value_names.items():
        new = mapping.get(old, old)
        names.setdefault(new, name)
    outputs = tuple(mapping.get(v, v) for v in graph.outputs)
    result = replace(graph, outputs=outputs, value_names=names, node_meta=dict(meta))
    live = {id(n) for n in result.nodes(include_sources=True)}
    result = replace(
        result,
        value_names={v: n for v, n in names.items() if id(v.node) in live},
        node_meta={k: m for k, m in meta.items() if id(k) in live},
    )
    return result
