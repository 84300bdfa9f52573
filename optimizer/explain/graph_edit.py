"""IR passes that re-plumb a model for explanation.

- :func:`cut_at`: make an intermediate value a graph input (attribute to an embedding, or to
  any layer, as captum's ``Layer*`` methods do), dropping inputs nothing reads any more.
- :func:`add_mask_input`: blend one input with a baseline through a mask that is itself a graph
  input, ``x' = baseline + mask * (x - baseline)``, so that one onnxruntime run evaluates many
  masks (the mask's leading axis becomes the batch). With ``segments`` the mask is given per
  feature (``[M, K]``) and expanded to the input's shape inside the graph by a ``Gather`` over a
  constant map of segment ids, which keeps what crosses into the runtime small.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from optimizer.explain.autodiff import resolve_value
from optimizer.explain.errors import ExplainError
from optimizer.ir import (
    Graph,
    Node,
    TensorData,
    TensorType,
    Value,
    constant,
    graph_input,
    transform,
)


def _substitute(graph: Graph, mapping: dict[Value, Value], provenance: str) -> Graph:
    """``graph`` with every read of a key of ``mapping`` redirected to its value."""

    def rewrite(node: Node, inputs: list[Value | None]) -> list[Value] | None:
        new_inputs = [mapping.get(v, v) if v is not None else None for v in inputs]
        caps = {name: mapping.get(v, v) for name, v in node.captures}
        if all(a is b for a, b in zip(new_inputs, inputs)) and all(
            caps[n] is v for n, v in node.captures
        ):
            return None
        return list(node.with_inputs(new_inputs, caps).outputs)

    result = transform(graph, rewrite, provenance=provenance)
    outputs = tuple(mapping.get(v, v) for v in result.outputs)
    return replace(result, outputs=outputs)


def prune_inputs(graph: Graph) -> Graph:
    """Drop graph inputs that no output depends on (onnxruntime insists on feeding each)."""
    live = {id(n) for n in graph.nodes(include_sources=True)}
    kept = tuple(v for v in graph.inputs if id(v.node) in live)
    return graph if len(kept) == len(graph.inputs) else replace(graph, inputs=kept)


def cut_at(graph: Graph, name: str) -> Graph:
    """Make the value called ``name`` a graph input of the same name and type.

    The computation upstream of it disappears; inputs only it used are dropped.
    """
    value = resolve_value(graph, name, "tensor")
    if value.node.is_input:
        return graph
    if not isinstance(value.type, TensorType) or value.type.shape is None:
        raise ExplainError(f"cannot cut at {name!r}: its type is unknown")
    fresh = graph_input(name, value.type)
    cut = _substitute(graph, {value: fresh}, "explain:cut")
    cut = replace(
        cut,
        inputs=(*cut.inputs, fresh),
        value_names={v: n for v, n in cut.value_names.items() if n != name},
    )
    return prune_inputs(cut)


@dataclass(frozen=True)
class MaskedGraph:
    """A model whose input ``input`` is blended with ``baseline`` through ``mask``.

    Feed ``input`` and ``baseline`` with one example each (batch 1) and ``mask`` with
    ``[M, *mask_shape]``; the model then runs on M blended examples. ``segments`` is the
    constant map of segment ids when masks are given per segment (``mask_shape == (K,)``).
    """

    graph: Graph
    input: str
    mask: str
    baseline: str
    mask_shape: tuple[int, ...]
    segments: np.ndarray | None = None


def add_mask_input(
    graph: Graph,
    input_name: str,
    *,
    mask_shape: tuple[int, ...] | None = None,
    segments: np.ndarray | None = None,
) -> MaskedGraph:
    """Insert the blend ``baseline + mask * (input - baseline)`` in front of ``input_name``.

    ``mask_shape`` is the per-mask shape, which must broadcast against one example of the
    input (e.g. ``(1, H, W)`` for an image ``[N, C, H, W]``: one mask for all channels);
    default: one example's full shape. Alternatively ``segments`` (an int array broadcastable
    to one example, ids ``0..K-1``) makes the mask ``[M, K]``: one value per segment.
    """
    inputs = {v.input_name: v for v in graph.inputs}
    if input_name not in inputs:
        raise ExplainError(f"no input named {input_name!r} (inputs: {', '.join(inputs)})")
    x = inputs[input_name]
    xt = x.type
    if not isinstance(xt, TensorType) or xt.shape is None or not xt.dtype.is_float:
        raise ExplainError(f"input {input_name!r} must be a float tensor of known rank to mask")
    example = tuple(xt.shape[1:])
    taken = {v.input_name for v in graph.inputs}
    mask_name = _fresh("explain.mask", taken)
    base_name = _fresh("explain.baseline", taken)
    # x and the baseline are fed one example each while the model runs on M blends: give
    # them batch symbols of their own, or onnxruntime would bind the model's batch symbol to 1.
    one = xt.shape[0] if isinstance(xt.shape[0], int) else "explain.example"
    fresh_x = graph_input(input_name, TensorType(xt.dtype, (one, *example)))
    baseline = graph_input(base_name, TensorType(xt.dtype, (one, *example)))
    batch: object = "masks"
    if segments is not None:
        segments = np.asarray(segments, dtype=np.int64)
        count = int(segments.max()) + 1
        if segments.min() < 0:
            raise ExplainError("segment ids must be >= 0")
        _check_broadcast(segments.shape, example, "segments")
        mask = graph_input(mask_name, TensorType(xt.dtype, (batch, count)))
        seg = constant(TensorData.from_array(segments))
        expanded_shape = (batch, *segments.shape)
        mask_value = Node.make(
            "Gather", [mask, seg], {"axis": 1}, output_types=[TensorType(xt.dtype, expanded_shape)]
        ).output
        shape_of_mask: tuple[int, ...] = (count,)
    else:
        shape_of_mask = tuple(mask_shape) if mask_shape is not None else example  # type: ignore[assignment]
        _check_broadcast(shape_of_mask, example, "mask_shape")
        mask = graph_input(mask_name, TensorType(xt.dtype, (batch, *shape_of_mask)))
        mask_value = mask
    blended_type = TensorType(xt.dtype, (batch, *example))
    diff = Node.make("Sub", [fresh_x, baseline], output_types=[fresh_x.type]).output
    scaled = Node.make("Mul", [mask_value, diff], output_types=[blended_type]).output
    blended = Node.make("Add", [baseline, scaled], output_types=[blended_type]).output
    masked = _substitute(graph, {x: blended}, "explain:mask")
    inputs_after = tuple(fresh_x if v is x else v for v in graph.inputs)
    # Intermediate value_info would repeat the model's batch symbol for tensors that now have
    # M rows: leave their shapes to onnxruntime's own inference.
    meta = replace(masked.meta, value_info_names=frozenset())
    masked = replace(masked, inputs=(*inputs_after, mask, baseline), meta=meta)
    return MaskedGraph(masked, input_name, mask_name, base_name, shape_of_mask, segments)


def _check_broadcast(shape: tuple, example: tuple, what: str) -> None:
    if len(shape) > len(example):
        raise ExplainError(f"{what} {shape} has more dims than one input example {example}")
    for a, b in zip(reversed(shape), reversed(example)):
        if a != 1 and isinstance(b, int) and a != b:
            raise ExplainError(f"{what} {shape} does not broadcast to one input example {example}")


def _fresh(name: str, taken: set[str]) -> str:
    candidate, k = name, 1
    while candidate in taken:
        k += 1
        candidate = f"{name}_{k}"
    return candidate
