"""Clean-up rewrites: Identity and inference-mode Dropout elimination.

Dead-code and common-subexpression elimination need no pass of their own:
a graph holds only what its outputs reach, and hash-consing merges equal
nodes whenever one is (re)built. :func:`eliminate_identities` therefore also
merges nodes that became equal once their Identity inputs were bypassed.
"""

from __future__ import annotations

from optimizer.ir import Graph, Node, Value, transform
from optimizer.ir.ops import dropout_trains


def _dropout_is_identity(node: Node, opset: int | None) -> bool:
    """Dropout computes the identity at inference unless training mode is switched on."""
    mode = node.inputs[2] if len(node.inputs) >= 3 else None
    return not dropout_trains(opset, node.attr("is_test", 0), mode)


def eliminate_identities(graph: Graph) -> Graph:
    """Bypass Identity nodes and Dropout nodes that are identities at inference.

    A Dropout whose mask output is read keeps its node: the mask would have to
    be materialised. Optional-type identities (over sequences) are bypassed too.
    """
    opset = graph.meta.opset("")
    consumers = graph.consumers()
    outputs = set(graph.outputs)

    def rewrite(node: Node, inputs: list[Value | None]) -> list[Value] | None:
        if node.domain != "" or not inputs or inputs[0] is None:
            return None
        if node.op == "Identity":
            return [inputs[0]]
        if node.op == "Dropout" and _dropout_is_identity(node, opset):
            mask_used = len(node.outputs) > 1 and (
                node.outputs[1] in consumers or node.outputs[1] in outputs
            )
            if not mask_used:
                return [inputs[0]] + list(node.outputs[1:])
        return None

    return transform(graph, rewrite, provenance="eliminate-identity")
