"""IR passes that turn a classifier into a labelling tool.

- :func:`expose_value` adds an intermediate tensor (an embedding) as a graph output;
  :func:`find_penultimate` picks that tensor when the user names none.
- :func:`set_dropout_training` switches every Dropout on (Monte Carlo dropout) or off.
- :func:`tile_batch` repeats the batch ``times`` times inside the graph, so that one
  ``session.run`` draws that many dropout samples of every item.

All passes build new graphs (the IR is immutable) and leave their input untouched. Nodes they
create carry the provenance ``label:<pass>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from optimizer.ir import (
    REGISTRY,
    UNKNOWN,
    DType,
    Graph,
    Node,
    NodeMeta,
    TensorData,
    TensorType,
    Value,
    constant,
    transform,
)
from optimizer.ir.graph import rename_after
from optimizer.label.exceptions import LabelModelError

#: Ops that compute a layer's features from the previous layer's (the classifier head's
#: last op is one of these; its data input is the penultimate representation).
_DENSE_OPS = frozenset({"Gemm", "MatMul", "Conv", "ConvTranspose", "Einsum", "MatMulInteger"})
#: Ops between the classifier layer and the model output that do not make a new layer:
#: activations that turn logits into scores, bias adds, scaling, reshapes, casts.
_HEAD_OPS = frozenset(
    {
        "Softmax",
        "LogSoftmax",
        "Sigmoid",
        "Identity",
        "Dropout",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Cast",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Transpose",
    }
)
#: Ops that copy their first input at inference: an embedding found behind one is named by
#: what they copy.
_COPY_OPS = frozenset({"Identity", "Dropout"})


def value_by_name(graph: Graph, name: str) -> Value:
    """The value called ``name`` in ``graph`` (an input, output or intermediate tensor)."""
    for value, output_name in zip(graph.outputs, graph.output_names):
        if output_name == name:
            return value
    for value in graph.inputs:
        if value.input_name == name:
            return value
    for value, value_name in graph.value_names.items():
        if value_name == name:
            return value
    known = sorted(set(graph.value_names.values()) | set(graph.output_names))
    hint = ", ".join(known[:12]) + (" ..." if len(known) > 12 else "")
    raise LabelModelError(f"the model has no tensor named {name!r} (tensors: {hint})")


def name_of(graph: Graph, value: Value) -> str | None:
    """The name ``value`` carries in ``graph`` (output name first), or None."""
    for out, out_name in zip(graph.outputs, graph.output_names):
        if out is value:
            return out_name
    if value.node.is_input:
        return value.input_name
    return graph.value_names.get(value)


def _non_constant(values) -> list[Value]:
    return [v for v in values if v is not None and not v.is_constant]


def find_penultimate(graph: Graph, output: Value) -> Value:
    """The penultimate representation behind the classifier output ``output``.

    Walks back from the output through head ops (softmax, bias adds, reshapes, dropout, ...)
    to the last dense op (Gemm, MatMul, Conv, Einsum) and returns that op's data input, the
    features the classifier layer reads, skipping Identity/Dropout copies. Raises
    :class:`LabelModelError` when no such layer exists.
    """
    value = output
    for _ in range(64):  # a head is a handful of ops; the bound only stops pathological walks
        node = value.node
        if node.is_source:
            break
        if node.domain in ("", "ai.onnx") and node.op in _DENSE_OPS:
            data = _non_constant(node.inputs)
            if len(data) != 1:
                break  # e.g. a MatMul of two activations: not a classifier layer
            features = data[0]
            while features.node.op in _COPY_OPS and features.node.inputs:
                features = features.node.inputs[0]
            return features
        data = _non_constant(node.inputs)
        if node.domain not in ("", "ai.onnx") or node.op not in _HEAD_OPS or len(data) != 1:
            break
        value = data[0]
    raise LabelModelError(
        "cannot find the penultimate layer automatically (no Gemm/MatMul/Conv classifier layer "
        "behind the output); name the embedding tensor explicitly"
    )


def expose_value(graph: Graph, value: Value, output_name: str) -> Graph:
    """``graph`` with ``value`` as one more output called ``output_name``.

    When ``value`` already is an output the graph is returned unchanged (read that output).
    """
    if any(out is value for out in graph.outputs):
        return graph
    if output_name in graph.output_names:
        raise LabelModelError(f"the model already has an output called {output_name!r}")
    return graph.with_outputs(
        graph.outputs + (value,), output_names=graph.output_names + (output_name,)
    )


def _bool_constant(flag: bool) -> Value:
    return constant(TensorData.from_array(np.array(flag, dtype=np.bool_)))


def count_dropouts(graph: Graph) -> int:
    """Number of Dropout nodes in ``graph``."""
    return sum(1 for n in graph.nodes() if n.op == "Dropout" and n.domain in ("", "ai.onnx"))


def set_dropout_training(
    graph: Graph, training: bool, *, seed: int | None = None, ratio: float | None = None
) -> Graph:
    """Switch every Dropout's ``training_mode`` to ``training`` (ONNX opset 12 and later).

    With ``training=True`` the Dropouts draw fresh masks on every run (Monte Carlo dropout);
    the nodes are unique, so the IR never merges two of them nor folds them. ``seed`` gives
    the k-th Dropout the ONNX ``seed`` attribute ``seed + k``, making a session's sequence of
    masks reproducible; ``ratio`` overrides every drop probability. With ``training=False``
    every Dropout copies its input (the clean-up pass then removes them).
    """
    opset = graph.meta.opset("") or 0
    if training and opset < 12:
        raise LabelModelError(
            f"Monte Carlo dropout needs ONNX opset 12 or later (Dropout's training_mode input); "
            f"the model imports opset {opset}: re-export it with a newer opset"
        )
    if ratio is not None and not 0.0 <= ratio < 1.0:
        raise LabelModelError(f"dropout ratio must lie in [0, 1), got {ratio}")
    order = [n for n in graph.nodes() if n.op == "Dropout" and n.domain in ("", "ai.onnx")]
    index = {node: k for k, node in enumerate(order)}
    mode = _bool_constant(training)

    def rewrite(node: Node, inputs: list[Value | None]) -> list[Value] | None:
        if node not in index:
            return None
        if opset < 12:  # training is False here (refused above otherwise)
            if opset >= 7 or node.attr("is_test", 0):
                return None  # opsets 7-11: Dropout never trains at inference
            attrs = {**{k: a for k, a in node.attrs}, "is_test": 1}
            types = [v.type for v in node.outputs]
            return list(Node.make("Dropout", inputs, attrs, output_types=types).outputs)
        x = inputs[0]
        rate = inputs[1] if len(inputs) > 1 else None
        if ratio is not None or rate is None:
            dtype = x.type.dtype if isinstance(x.type, TensorType) else DType.FLOAT
            value = 0.5 if ratio is None else ratio
            rate = constant(TensorData.from_array(np.array(value, dtype=dtype.to_numpy())))
        attrs = {k: a for k, a in node.attrs if k != "seed"}
        if training and seed is not None:
            attrs["seed"] = int(seed) + index[node]
        new = Node.make(
            "Dropout",
            [x, rate, mode],
            attrs,
            output_types=[v.type for v in node.outputs],
            unique=training,
        )
        return list(new.outputs)

    return transform(graph, rewrite, provenance="label:dropout-training" if training else "")


def _retyped(node: Node, inputs: list[Value | None], captures, opset: int | None) -> Node:
    """``node`` over new inputs whose shapes changed: output types inferred afresh.

    Where inference cannot tell, the old dtype is kept with an unknown shape (never a stale
    shape: the batch dimension of everything downstream of a tiled input changed).
    """
    common = dict(domain=node.domain, captures=captures, unique=node.unique is not None)
    probe = Node.make(
        node.op, inputs, node.attrs, output_types=[UNKNOWN] * len(node.outputs), **common
    )
    inferred = REGISTRY.infer(probe, opset)
    if inferred is None or len(inferred) < len(node.outputs):
        inferred = [
            TensorType(v.type.dtype, None) if isinstance(v.type, TensorType) else v.type
            for v in node.outputs
        ]
    return Node.make(
        node.op, inputs, node.attrs, output_types=list(inferred[: len(node.outputs)]), **common
    )


def substitute(graph: Graph, replacements: Mapping[Value, Value], *, provenance: str) -> Graph:
    """Rebuild ``graph`` with each key of ``replacements`` read as its value.

    Every node downstream of a replaced value is rebuilt with inferred output types.
    """
    opset = graph.meta.opset("")
    mapping: dict[Value, Value] = {}
    meta = dict(graph.node_meta)
    for node in graph.nodes(include_sources=True):
        if node.is_source:
            continue

        def look(v: Value) -> Value:
            return mapping.get(v, replacements.get(v, v))

        inputs = [None if v is None else look(v) for v in node.inputs]
        captures = {name: look(v) for name, v in node.captures}
        same = all(a is b for a, b in zip(inputs, node.inputs)) and all(
            captures[n] is v for n, v in node.captures
        )
        if same:
            continue
        rebuilt = _retyped(node, inputs, captures, opset)
        if node in meta and rebuilt not in meta:
            meta[rebuilt] = meta[node]
        for old, new in zip(node.outputs, rebuilt.outputs):
            mapping[old] = new
    for new in replacements.values():
        if not new.node.is_source and new.node not in meta:
            meta[new.node] = NodeMeta(provenance=provenance)
    for out in graph.outputs:  # an input that is also an output
        if out in replacements and out not in mapping:
            mapping[out] = replacements[out]
    result = rename_after(graph, mapping, meta)
    # Declared output types and value_info of the source model describe the old batch size.
    return replace(result, meta=replace(result.meta, output_types=(), value_info_names=frozenset()))


def tile_batch(graph: Graph, times: int) -> Graph:
    """Repeat every graph input ``times`` times along axis 0, inside the graph.

    Each output then holds ``times`` stacked copies of the batch, sample-major: row
    ``t * batch + i`` is copy ``t`` of item ``i``. With Dropout in training mode the copies
    are independent Monte Carlo samples drawn by one run.
    """
    if times < 1:
        raise LabelModelError(f"the number of samples must be at least 1, got {times}")
    if times == 1:
        return graph
    replacements: dict[Value, Value] = {}
    for value in graph.inputs:
        t = value.type
        if not isinstance(t, TensorType) or t.shape is None or len(t.shape) == 0:
            raise LabelModelError(
                f"input '{value.input_name}' has no batch dimension to tile (type {t})"
            )
        repeats = np.ones(len(t.shape), dtype=np.int64)
        repeats[0] = times
        first = t.shape[0] * times if isinstance(t.shape[0], int) else None
        tiled = Node.make(
            "Tile",
            [value, constant(TensorData.from_array(repeats))],
            output_types=[TensorType(t.dtype, (first, *t.shape[1:]))],
        )
        replacements[value] = tiled.outputs[0]
    return substitute(graph, replacements, provenance="label:tile-batch")
