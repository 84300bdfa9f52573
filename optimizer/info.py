"""Model statistics: op histogram, parameter count, FLOPs, size."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from optimizer.ir import Graph, Node, TensorType
from optimizer.ir.types import num_elements

#: Ops that cost about one floating-point operation per output element.
_ELEMENTWISE_FLOPS = {
    "Add": 1, "Sub": 1, "Mul": 1, "Div": 1, "Relu": 1, "Neg": 1, "Abs": 1, "Max": 1, "Min": 1,
    "Sigmoid": 4, "Tanh": 4, "Exp": 1, "Log": 1, "Sqrt": 1, "Erf": 4, "Pow": 1, "Clip": 1,
    "LeakyRelu": 2, "HardSigmoid": 3, "HardSwish": 4, "Gelu": 8, "Softmax": 5, "Where": 1,
    "BatchNormalization": 2, "LayerNormalization": 8, "InstanceNormalization": 8,
    "ReduceMean": 1, "ReduceSum": 1, "GlobalAveragePool": 1, "Sum": 1, "Reciprocal": 1,
}  # fmt: skip


@dataclass(frozen=True)
class ModelStats:
    """Summary numbers of one graph."""

    nodes: int
    op_histogram: dict[str, int]
    parameters: int
    parameter_bytes: int
    flops: int
    nodes_without_flops: int = 0
    inputs: list[tuple[str, str]] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)
    opsets: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        """A JSON-ready dict."""
        return {
            "nodes": self.nodes,
            "op_histogram": dict(sorted(self.op_histogram.items())),
            "parameters": self.parameters,
            "parameter_bytes": self.parameter_bytes,
            "flops": self.flops,
            "nodes_without_flops": self.nodes_without_flops,
            "inputs": [{"name": n, "type": t} for n, t in self.inputs],
            "outputs": [{"name": n, "type": t} for n, t in self.outputs],
            "opsets": {d or "ai.onnx": v for d, v in self.opsets.items()},
        }


def _concrete(t):
    """A tensor type with symbolic dims taken as 1 (FLOPs are reported per unit of each symbol)."""
    if not isinstance(t, TensorType) or t.shape is None:
        return t
    return TensorType(t.dtype, tuple(d if isinstance(d, int) else 1 for d in t.shape))


def node_flops(node: Node) -> int | None:
    """Estimated floating-point operations of one node, or None when shapes are unknown.

    Symbolic dimensions (a dynamic batch) count as 1.
    """
    outs = [_concrete(v.type) for v in node.outputs]
    if not outs or not isinstance(outs[0], TensorType):
        return None
    out_elems = num_elements(outs[0].shape)
    ins = [_concrete(v.type) if v is not None else None for v in node.inputs]
    if node.op in ("Conv", "ConvTranspose") and len(ins) >= 2 and isinstance(ins[1], TensorType):
        kernel = num_elements(ins[1].shape)
        if out_elems is None or kernel is None or not ins[1].shape:
            return None
        out_channels = ins[1].shape[0] if node.op == "Conv" else ins[1].shape[1]
        per_output = kernel // out_channels if node.op == "Conv" else kernel // ins[1].shape[0]
        return 2 * out_elems * per_output
    if node.op in ("MatMul", "Gemm") and isinstance(ins[0], TensorType):
        shape = ins[0].shape
        if out_elems is None or not shape or not isinstance(shape[-1], int):
            return None
        k = shape[0] if node.op == "Gemm" and node.attr("transA", 0) else shape[-1]
        return 2 * out_elems * k
    if node.op in _ELEMENTWISE_FLOPS:
        return None if out_elems is None else out_elems * _ELEMENTWISE_FLOPS[node.op]
    if node.op in ("MaxPool", "AveragePool"):
        kernel = node.attr("kernel_shape") or ()
        if out_elems is None:
            return None
        size = 1
        for k in kernel:
            size *= k
        return out_elems * size
    return 0


def graph_stats(graph: Graph) -> ModelStats:
    """Count ops, parameters and FLOPs of ``graph``."""
    nodes = graph.nodes()
    histogram = Counter(f"{n.domain}::{n.op}" if n.domain else n.op for n in nodes)
    params = bytes_ = 0
    for value in graph.constants():
        data = value.constant
        params += data.size
        bytes_ += data.nbytes
    flops = unknown = 0
    for node in nodes:
        count = node_flops(node)
        if count is None:
            unknown += 1
        else:
            flops += count
    return ModelStats(
        nodes=len(nodes),
        op_histogram=dict(histogram),
        parameters=params,
        parameter_bytes=bytes_,
        flops=flops,
        nodes_without_flops=unknown,
        inputs=[(v.input_name, str(v.type)) for v in graph.inputs],
        outputs=[(n, str(v.type)) for v, n in zip(graph.outputs, graph.output_names)],
        opsets=dict(graph.meta.opset_imports),
    )
