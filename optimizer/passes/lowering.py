"""The lowering pass: runtime-specific spellings of the same computation, applied once to the
search's result (rules/lowering.rules, proved like every rule).

Some rewrites pay only through what the runtime does with the graph afterwards, in a way a
per-node price cannot see. onnxruntime's CPU provider fuses an Add of two same-shape tensors
into the LayerNormalization reading it (SkipLayerNormalization) when that LayerNormalization is
the Add's only reader; its 1.32 kernel for the fusion ran about six times slower than the two
ops it replaces (BERT-base: 1 ms per call against 184 us, 9.5% of the model's kernel time).
Spelling the Add as a two-input Sum keeps the fast kernels; where the Add has other readers
onnxruntime does not fuse, and a Sum there would only duplicate the addition.

So the pass applies a lowering rule's match only where every matched node except the roots is
read by the match alone: the rewrite then replaces work rather than adding to it. The search
never sees these rules, and the guard (``optimizer.api``) measures the result against the
clean-up passes' output like any other rewrite.
"""

from __future__ import annotations

from optimizer.ir import Graph
from optimizer.rewrite.apply import apply_match
from optimizer.rewrite.match import Match, MatchIndex, context

__all__ = ["lower_for_runtime", "lowering_rules"]

#: Runtimes (devices) each lowering rule is for.
_RULES_FOR = {"layernorm-of-sum": frozenset({"cpu"})}


def lowering_rules(device: str = "cpu") -> MatchIndex:
    """The shipped lowering rules meant for ``device``."""
    from optimizer.passes.rewrite import LOWERING_FAMILY, shipped_rules

    return MatchIndex(
        r for r in shipped_rules()
        if r.family == LOWERING_FAMILY and device in _RULES_FOR.get(r.name, frozenset())
    )  # fmt: skip


def _replaces_work(graph: Graph, match: Match) -> bool:
    """Whether every node of ``match`` but its roots' producers is read only inside it."""
    ctx = context(graph)
    roots = {r.node for r in match.roots}
    for node in match.nodes - roots:
        for value in node.outputs:
            if any(user not in match.nodes for user in ctx.consumers.get(value, ())):
                return False
            if any(value is out for out in graph.outputs):
                return False
    return True


def lower_for_runtime(graph: Graph, device: str = "cpu") -> tuple[Graph, list[str]]:
    """``graph`` with the lowering rules for ``device`` applied wherever they replace work;
    returns the graph and the rules applied, one entry per application."""
    index = lowering_rules(device)
    applied: list[str] = []
    if not index.rules:
        return graph, applied
    while True:
        for match in index.matches(graph):
            if not _replaces_work(graph, match):
                continue
            rewritten = apply_match(graph, match)
            if rewritten is not None:
                graph = rewritten
                applied.append(match.rule.name)
                break
        else:
            return graph, applied
