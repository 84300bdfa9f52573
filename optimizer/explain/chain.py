"""The chain of concrete graphs that leads from the searched graph to the optimized one.

A search reports its rewrites as a trace (rule, matched node names, costs), and, inside an
opt-in :func:`optimizer.search.base.recording`, every algorithm call and fold with its input
and output graphs (:class:`~optimizer.search.base.Checkpoint`). :func:`build_chain` turns those
checkpoints into :class:`Transition` links, one per rewrite wherever it can:

- each call's steps are *replayed* from the call's input graph: the step's rule is matched
  where the step says (the same node names; nodes the search created are described as
  ``op#serial``, matched by op when the serial is gone) and applied, giving one link per
  rewrite with its match and the nodes it created; where a step matches only after constant
  folding (the search folds between rounds and inside the e-graph), a fold link comes first;
- for algorithms that rewrite one graph after another (greedy, TASO, OCGGS) the replay
  normally ends exactly at the graph the call returned (the IR is hash-consed, so that is a
  structural comparison): the links are the search's own history;
- equality saturation rewrites an e-graph and extracts a graph from it, so its replay is a
  reconstruction: each link is a real application of the rule to a concrete graph, each
  graph equivalent to the input over the reals, and a closing ``block`` link goes from the
  replay's graph to the extracted one (with the steps that could not be replayed);
- constant folding between rounds and clean-up passes between searches are links without
  steps.

Every link's ``before`` is the previous link's ``after``; the first starts at the graph the
search started from and the last ends at the optimized graph.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from optimizer.ir import Graph, Node, Value
from optimizer.passes.fold import fold_constants
from optimizer.passes.rewrite import describe_nodes
from optimizer.rewrite.apply import apply_match, new_nodes, replacement
from optimizer.rewrite.match import Match, MatchIndex, context
from optimizer.rewrite.rule import Rule
from optimizer.search.base import Checkpoint, TraceStep

__all__ = ["STEP", "BLOCK", "FOLD", "CLEANUP", "Transition", "build_chain", "replay_steps"]

#: Kinds of links: one replayed rewrite; several rewrites at once; constant folding between
#: search rounds; clean-up passes between searches.
STEP, BLOCK, FOLD, CLEANUP = "step", "block", "fold", "clean-up"

#: Steps replayed per search call at most (the rest join the call's closing block).
MAX_REPLAYED = 400
#: A description the search gives a node without an ONNX name: ``op#serial``.
_UNNAMED = re.compile(r"^(?P<op>[\w.:]+)#\d+$")


@dataclass(frozen=True, eq=False)
class Transition:
    """One link of the chain: ``before`` -> ``after``.

    ``steps`` are indices into the run's trace (all of a block's steps, one for a replayed
    step, none for folding and clean-up); ``algorithm`` the search that made it. A replayed
    step also has its ``match`` (the nodes it matched in ``before``), ``results`` (the values
    that replaced the match's roots) and ``created`` (the nodes of ``after`` that the rewrite
    built; none when its results already existed, as for ``relu(relu(x)) = relu(x)``).
    """

    kind: str
    before: Graph
    after: Graph
    steps: tuple[int, ...] = ()
    algorithm: str = ""
    match: Match | None = None
    results: tuple[Value, ...] = ()
    created: frozenset[Node] = field(default_factory=frozenset)
    note: str = ""


def build_chain(
    start: Graph, checkpoints: Sequence[Checkpoint], end: Graph, rules: Sequence[Rule]
) -> list[Transition]:
    """Links from ``start`` (the graph the search began with) to ``end`` (the optimized graph)
    through the recorded ``checkpoints``, trace steps numbered in recording order (the order
    of the run's merged trace). ``rules`` resolves the steps' rule names."""
    by_name = {r.name: r for r in rules}
    chain: list[Transition] = []
    current, index = start, 0
    for cp in checkpoints:
        if cp.before.key != current.key:
            chain.append(Transition(CLEANUP, current, cp.before, note="clean-up passes"))
        ids = tuple(range(index, index + len(cp.steps)))
        index += len(cp.steps)
        if cp.kind == FOLD:
            if cp.after.key != cp.before.key:
                chain.append(Transition(FOLD, cp.before, cp.after, note="constant folding"))
        elif cp.steps or cp.after.key != cp.before.key:
            chain.extend(replay_steps(cp, ids, by_name))
        current = cp.after
    if current.key != end.key:
        chain.append(Transition(CLEANUP, current, end, note="clean-up passes"))
    return chain


def replay_steps(cp: Checkpoint, ids: tuple[int, ...], rules: dict[str, Rule]) -> list[Transition]:
    """Links from ``cp.before`` to ``cp.after``: each step that can be matched again, applied
    in trace order, then, unless that reproduced ``cp.after`` exactly, one :data:`BLOCK` link
    from the replay's graph to ``cp.after`` holding the steps that could not be replayed.

    For a sequential algorithm an exact replay is the rule-by-rule history of the search.
    Equality saturation applies its rewrites to an e-graph and extracts a graph from it, so
    its steps replayed in order on concrete graphs are a reconstruction (each link a real
    application of the rule, each graph equivalent over the reals); the closing block is the
    difference between that reconstruction and the extracted graph.
    """
    graph = cp.before
    opset = graph.meta.opset("")
    links: list[Transition] = []
    skipped: list[int] = []
    unfoldable: tuple | None = None
    e_graph = "eqsat" in cp.kind
    for number, step in zip(ids, cp.steps, strict=True):
        rule = rules.get(step.rule)
        if rule is None or len(links) >= MAX_REPLAYED:
            skipped.append(number)
            continue
        found = _find(graph, rule, step, opset)
        if found is None and graph.key != unfoldable:
            # The search folds constants as it goes (between rounds; inside the e-graph):
            # a rule whose precondition needs a folded constant matches after folding.
            folded, unfoldable = fold_constants(graph), graph.key
            found = None if folded.key == graph.key else _find(folded, rule, step, opset)
            if found is not None:
                links.append(Transition(FOLD, graph, folded, (), cp.kind, note="constant folding"))
                graph = folded
        if found is None:
            skipped.append(number)
            continue
        match, after, results, created = found
        note = "replayed outside the e-graph" if e_graph else ""
        links.append(
            Transition(STEP, graph, after, (number,), cp.kind, match, results, created, note)
        )
        graph = after
    if graph.key != cp.after.key:
        if e_graph:
            why = "the rest of the equality-saturation call: its extracted graph"
        elif skipped:
            why = f"the {len(skipped)} steps that could not be matched again"
        else:
            why = "the search's result, which the replay did not reproduce"
        links.append(Transition(BLOCK, graph, cp.after, tuple(skipped), cp.kind, note=why))
    elif skipped:  # the skipped steps changed nothing that stayed: keep them listed
        links.append(Transition(BLOCK, graph, graph, tuple(skipped), cp.kind,
                                note="steps with no effect on the result"))  # fmt: skip
    return links


def _find(
    graph: Graph, rule: Rule, step: TraceStep, opset: int | None
) -> tuple[Match, Graph, tuple[Value, ...], frozenset[Node]] | None:
    """The match of ``rule`` that ``step`` describes, applied: the best agreement between the
    step's node descriptions and the match's (a name must be equal; an ``op#serial``
    description equal, or at least of the same op, since the serials of nodes the search
    created and then dropped are not reproduced)."""
    ctx = context(graph, opset)
    best: tuple[int, Match, Graph, tuple[Value, ...], frozenset[Node]] | None = None
    for match in MatchIndex([rule]).matches(graph, opset=opset):
        score = _agreement(describe_nodes(graph, ctx, match.nodes), step.nodes_matched)
        if score is None or (best is not None and score <= best[0]):
            continue
        values = replacement(match, opset=opset)
        if values is None:
            continue
        after = apply_match(graph, match, opset=opset, values=values)
        if after is None:
            continue
        created = frozenset(new_nodes(list(values), ctx.position))
        best = (score, match, after, tuple(values), created)
        if score == 2 * len(step.nodes_matched):  # every description equal: it is this one
            break
    return None if best is None else best[1:]


def _agreement(have: Sequence[str], want: Sequence[str]) -> int | None:
    """2 points per equal description, 1 per unnamed node of the same op; None when some
    wanted description has no counterpart."""
    if len(have) != len(want):
        return None
    left = list(have)
    score = 0
    loose = []
    for w in want:
        if w in left:
            left.remove(w)
            score += 2
        else:
            loose.append(w)
    for w in loose:
        m = _UNNAMED.match(w)
        hit = None
        if m is not None:
            hit = next((h for h in left if (o := _UNNAMED.match(h)) and o["op"] == m["op"]), None)
        if hit is None:
            return None
        left.remove(hit)
        score += 1
    return score
