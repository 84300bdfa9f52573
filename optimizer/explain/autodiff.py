"""Reverse-mode autodiff as an IR pass: the vector-Jacobian-product (VJP) graph of a model.

:func:`build_vjp` takes an :class:`optimizer.ir.Graph` and returns a new graph that computes,
in one onnxruntime run, the model's output ``y`` *and* ``J^T u``: the gradient of ``<u, y>``
with respect to chosen graph inputs and, optionally, named intermediate values (what Grad-CAM
needs), where the cotangent ``u`` is an extra graph input. The gradient graph is plain ONNX at
the model's own opset, so it runs wherever the model runs and graphopt's passes can optimize it.

How it works (as JAX's ``backward_pass`` over a jaxpr):

1. *Activity analysis.* A value *varies* when it is a floating-point value computed from a
   ``wrt`` source; it is *relevant* when the output depends on it. Only nodes with a relevant
   output and a varying input need a VJP rule; integer shape arithmetic, constant folding
   islands and indices never do. Ops without a rule on that path are all listed in one
   :class:`UnsupportedOpError` before anything is built.
2. *Backward sweep.* In reverse topological order, each active node's rule (from
   :data:`VJP_RULES`, one per op, in ``vjp_rules_*.py``) maps the cotangents of its outputs to
   cotangents of its varying inputs; a value read by several nodes sums its contributions.

Rules build nodes through :class:`~optimizer.explain.vjp_context.VJPContext`, which picks the
opset-appropriate form of each helper (``ReduceSum`` axes as an input from opset 13,
``Unsqueeze`` axes as an input from 13, ...) and undoes broadcasting (sum over broadcast axes,
then reshape), statically where the shapes say enough and with runtime shape arithmetic where
they are symbolic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from optimizer.explain.errors import AutodiffError, ExplainError, UnsupportedOpError
from optimizer.explain.vjp_context import VJPContext, is_float
from optimizer.ir import (
    DType,
    Graph,
    Node,
    TensorType,
    Value,
    graph_input,
    transform,
)
from optimizer.passes.fold import fold_constants

#: rule(ctx, node, output cotangents (None: zero), which inputs need one) -> input cotangents.
VJPRule = Callable[["VJPContext", Node, list["Value | None"], list[bool]], Sequence["Value | None"]]

#: The VJP rule of each supported op (default ONNX domain), filled by the ``vjp_rules_*`` modules.
VJP_RULES: dict[str, VJPRule] = {}


def vjp_rule(*ops: str) -> Callable[[VJPRule], VJPRule]:
    """Register the decorated function as the VJP rule of ``ops``."""

    def register(fn: VJPRule) -> VJPRule:
        for op in ops:
            VJP_RULES[op] = fn
        return fn

    return register


def supported_ops() -> list[str]:
    """Ops the autodiff pass can differentiate through, sorted."""
    _load_rules()
    return sorted(VJP_RULES)


def _load_rules() -> None:
    # The rule modules register themselves on import; imported here, not at the top, because
    # they import this module's VJPContext.
    from optimizer.explain import vjp_rules_math, vjp_rules_nn, vjp_rules_shape  # noqa: F401


# ------------------------------------------------------------------------------- result


@dataclass(frozen=True)
class GradientGraph:
    """The VJP graph of a model and the names of its extra inputs and outputs.

    - ``graph``: inputs = the model's inputs + ``cotangent``; outputs = the differentiated
      output (its own name), then one gradient per ``wrt`` name, then each intermediate's
      forward value (for Grad-CAM).
    - ``output``: the name of the differentiated model output.
    - ``cotangent``: the name of the input that takes ``u`` (the output's shape and type).
    - ``gradients``: source name (input or intermediate) -> name of its gradient output.
    - ``activations``: intermediate name -> name of the output that holds its forward value.
    """

    graph: Graph
    output: str
    cotangent: str
    gradients: dict[str, str]
    activations: dict[str, str]


# ------------------------------------------------------------------------------- the pass


def _names_to_values(graph: Graph) -> dict[str, Value]:
    table: dict[str, Value] = {}
    for value, name in graph.value_names.items():
        table.setdefault(name, value)
    for value, name in zip(graph.outputs, graph.output_names):
        table[name] = value
    for value in graph.inputs:
        table[value.input_name] = value
    return table


def value_names(graph: Graph) -> dict[Value, str]:
    """Every named value of ``graph``: inputs, outputs and named intermediates."""
    names = dict(graph.value_names)
    for value, name in zip(graph.outputs, graph.output_names):
        names[value] = name
    for value in graph.inputs:
        names[value] = value.input_name
    return names


def resolve_value(graph: Graph, name: str, what: str = "tensor") -> Value:
    """The value called ``name`` in ``graph`` (an input, output or named intermediate)."""
    table = _names_to_values(graph)
    if name not in table:
        inputs = ", ".join(v.input_name for v in graph.inputs)
        raise ExplainError(
            f"no {what} named {name!r} in the model (inputs: {inputs}; outputs: "
            f"{', '.join(graph.output_names)}; `graphopt explain layers` lists the others)"
        )
    return table[name]


def _active_nodes(
    order: Sequence[Node], sources: set[Value], output: Value
) -> tuple[set[Value], list[Node]]:
    """Values that vary with the sources, and the nodes the backward sweep must visit."""
    varies = set(sources)
    for node in order:
        if any(v in varies for v in node.operands):
            varies.update(o for o in node.outputs if is_float(o))
    relevant = {output}
    active: list[Node] = []
    for node in reversed(order):
        if not any(o in relevant for o in node.outputs):
            continue
        floats = [v for v in node.operands if is_float(v)]
        relevant.update(floats)
        if any(v in varies for v in node.operands):
            active.append(node)
    return varies, active


def _check_supported(active: Sequence[Node], names: Mapping[Value, str]) -> None:
    missing: Counter[str] = Counter()
    example: dict[str, str] = {}
    for node in active:
        key = node.op if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op}"
        if node.domain in ("", "ai.onnx") and node.op in VJP_RULES:
            continue
        missing[key] += 1
        name = names.get(node.outputs[0]) if node.outputs else None
        example.setdefault(key, name or "?")
    if missing:
        parts = [f"{op} (x{n}, e.g. {example[op]!r})" for op, n in sorted(missing.items())]
        raise UnsupportedOpError(
            list(missing),
            "no gradient rule for "
            + ", ".join(parts)
            + " on the path from the inputs to the output; supported ops: "
            + ", ".join(sorted(VJP_RULES)),
        )


def _fresh(name: str, taken: set[str]) -> str:
    candidate, k = name, 1
    while candidate in taken:
        k += 1
        candidate = f"{name}_{k}"
    taken.add(candidate)
    return candidate


def differentiable_inputs(graph: Graph) -> list[str]:
    """Names of the floating-point graph inputs (the default ``wrt``)."""
    return [v.input_name for v in graph.inputs if is_float(v)]


def build_vjp(
    graph: Graph,
    wrt: Sequence[str] | None = None,
    *,
    output: str | None = None,
    intermediates: Sequence[str] = (),
) -> GradientGraph:
    """Build the VJP graph of ``graph`` (see the module docstring).

    ``wrt`` names floating-point graph inputs (default: all of them; ``[]`` for none);
    ``output`` names the model output to differentiate (default: the first); ``intermediates``
    names internal values whose gradient (and forward value) the graph should also return.
    Raises :class:`UnsupportedOpError` when ops on the path have no VJP rule, and
    :class:`ExplainError` for unknown names or non-float tensors.
    """
    _load_rules()
    opset = graph.meta.opset("")
    if opset is None:
        raise AutodiffError("the model imports no default-domain (ai.onnx) opset")
    # Shape arithmetic and constant subexpressions (exporters leave them in raw models) become
    # constants first, so rules can read axes, slice bounds and reshape targets.
    graph = fold_constants(graph)
    out_name = output if output is not None else graph.output_names[0]
    if out_name not in graph.output_names:
        raise ExplainError(
            f"no output named {out_name!r} (outputs: {', '.join(graph.output_names)})"
        )
    out_value = graph.outputs[graph.output_names.index(out_name)]
    if not is_float(out_value):
        raise ExplainError(f"output {out_name!r} is not a floating-point tensor")
    if wrt is None:
        wrt = differentiable_inputs(graph)
    inputs_by_name = {v.input_name: v for v in graph.inputs}
    sources: dict[str, Value] = {}
    for name in wrt:
        if name not in inputs_by_name:
            raise ExplainError(f"no input named {name!r} (inputs: {', '.join(inputs_by_name)})")
        sources[name] = inputs_by_name[name]
    for name in intermediates:
        sources[name] = resolve_value(graph, name, "intermediate value")
    for name, value in sources.items():
        if not is_float(value):
            raise ExplainError(
                f"{name!r} is a {value.type} tensor: gradients exist only for floating-point "
                "tensors (explain an embedding or other float intermediate instead)"
            )
    if not sources:
        raise ExplainError("nothing to differentiate with respect to (no float inputs given)")

    graph, sources, out_value = _with_pool_indices(graph, sources, out_value)
    names = value_names(graph)
    order = graph.nodes()
    varies, active = _active_nodes(order, set(sources.values()), out_value)
    _check_supported(active, names)
    for node in active:
        if node.captures:
            raise UnsupportedOpError([node.op], f"cannot differentiate through {node.op} bodies")

    ctx = VJPContext(opset, names)
    # New input and output names must not collide with the graph's inputs and outputs; an
    # intermediate's own name is free to be its output's name (other values that share a new
    # name are renamed by the exporter).
    taken = set(graph.output_names) | set(inputs_by_name)
    cot_name = _fresh(f"{out_name}.cotangent", taken)
    cot_in = graph_input(cot_name, out_value.type)
    pending: dict[Value, list[Value]] = {out_value: [cot_in]}
    source_values = {v: n for n, v in sources.items()}
    grads: dict[str, Value] = {}
    for node in active:  # already in reverse topological order
        douts = []
        for o in node.outputs:
            parts = pending.pop(o, None)
            total = ctx.sum(parts) if parts else None
            douts.append(total)
            if o in source_values:
                grads[source_values[o]] = total if total is not None else ctx.zeros_like(o)
        if all(d is None for d in douts):
            continue
        need = [v is not None and v in varies for v in node.inputs]
        dins = VJP_RULES[node.op](ctx, node, douts, need)
        for value, dvalue, needed in zip(node.inputs, dins, need):
            if needed and dvalue is not None:
                pending.setdefault(value, []).append(dvalue)
    for name, value in sources.items():
        if name in grads:
            continue
        parts = pending.get(value)
        grads[name] = ctx.sum(parts) if parts else ctx.zeros_like(value)

    outputs = [out_value]
    out_names = [out_name]
    grad_names: dict[str, str] = {}
    for name in sources:
        grad_names[name] = _fresh(f"{name}.grad", taken)
        outputs.append(grads[name])
        out_names.append(grad_names[name])
    act_names: dict[str, str] = {}
    for name in intermediates:
        value = sources[name]
        if value is out_value:
            act_names[name] = out_name
            continue
        act_names[name] = _fresh(name if name not in out_names else f"{name}.value", taken)
        outputs.append(value)
        out_names.append(act_names[name])
    result = replace(
        graph,
        inputs=(*graph.inputs, cot_in),
        outputs=tuple(outputs),
        output_names=tuple(out_names),
        meta=replace(
            graph.meta,
            output_types=tuple((n, t) for n, t in graph.meta.output_types if n == out_name),
        ),
    )
    return GradientGraph(result, out_name, cot_name, grad_names, act_names)


def _with_pool_indices(
    graph: Graph, sources: dict[str, Value], output: Value
) -> tuple[Graph, dict[str, Value], Value]:
    """Give every one-output MaxPool its ``Indices`` output, so that the backward pass scatters
    to the argmax the forward pass found (the node is the same, so it runs once)."""
    if not any(n.op == "MaxPool" and len(n.outputs) == 1 for n in graph.nodes()):
        return graph, sources, output
    mapping: dict[Value, Value] = {}

    def rewrite(node: Node, inputs: list[Value | None]) -> list[Value] | None:
        if node.op != "MaxPool" or node.domain or len(node.outputs) != 1:
            return None
        y = node.outputs[0]
        index_type = TensorType(DType.INT64, VJPContext.shape_of(y))
        twin = Node.make("MaxPool", inputs, node.attrs, output_types=[y.type, index_type])
        mapping[y] = twin.outputs[0]
        return [twin.outputs[0]]

    rewritten = transform(graph, rewrite, provenance="explain:maxpool-indices")
    renamed = {name: mapping.get(v, v) if not v.node.is_input else v for name, v in sources.items()}
    out = rewritten.outputs[graph.outputs.index(output)]
    # Sources that transform() rebuilt (downstream of a MaxPool) are found again by name.
    names = _names_to_values(rewritten)
    renamed = {n: names.get(n, v) if not v.node.is_input else v for n, v in renamed.items()}
    return rewritten, renamed, out


def forward_graph(graph: Graph, output: str | None = None, extra: Sequence[str] = ()) -> Graph:
    """``graph`` reduced to one output (default: the first) plus named intermediates.

    Dropping the other outputs lets onnxruntime skip what only they need.
    """
    out_name = output if output is not None else graph.output_names[0]
    if out_name not in graph.output_names:
        raise ExplainError(
            f"no output named {out_name!r} (outputs: {', '.join(graph.output_names)})"
        )
    values = [graph.outputs[graph.output_names.index(out_name)]]
    names = [out_name]
    for name in extra:
        if name not in names:
            values.append(resolve_value(graph, name))
            names.append(name)
    meta = replace(
        graph.meta, output_types=tuple((n, t) for n, t in graph.meta.output_types if n in names)
    )
    return replace(graph, outputs=tuple(values), output_names=tuple(names), meta=meta)
