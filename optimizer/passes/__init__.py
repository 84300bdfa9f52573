"""Graph passes and the pipeline that runs them with statistics and IR checks."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from optimizer.ir import Graph
from optimizer.passes.cleanup import eliminate_identities
from optimizer.passes.fold import DEFAULT_SIZE_LIMIT, fold_constants
from optimizer.passes.rewrite import apply_rules, apply_rules_pass

__all__ = [
    "DEFAULT_SIZE_LIMIT",
    "PASSES",
    "PassResult",
    "apply_rules",
    "apply_rules_pass",
    "eliminate_identities",
    "fold_constants",
    "run_passes",
]

Pass = Callable[[Graph], Graph]


@dataclass(frozen=True)
class PassResult:
    """What one pass did: node counts before and after, and seconds taken."""

    name: str
    nodes_before: int
    nodes_after: int
    seconds: float


def _passes(size_limit: int) -> dict[str, Pass]:
    return {
        "eliminate-identity": eliminate_identities,
        "fold-constants": lambda g: fold_constants(g, size_limit=size_limit),
        "apply-rules": lambda g: apply_rules_pass(g, fold_size_limit=size_limit),
    }


#: Names of the passes, in the order the default pipeline runs them: clean-up, then the
#: greedy application of the rule library in rules/ (a no-op while it holds no rules).
PASSES: tuple[str, ...] = ("eliminate-identity", "fold-constants", "apply-rules")


def run_passes(
    graph: Graph,
    names: Sequence[str] = PASSES,
    *,
    fold_size_limit: int = DEFAULT_SIZE_LIMIT,
    check: bool = True,
    max_rounds: int = 4,
) -> tuple[Graph, list[PassResult]]:
    """Run the named passes to a fixed point (at most ``max_rounds`` rounds).

    With ``check`` the IR checker runs after every pass, so a broken pass is
    caught where it broke the graph.
    """
    table = _passes(fold_size_limit)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown pass {unknown[0]!r}; passes: {', '.join(table)}")
    results: list[PassResult] = []
    for _ in range(max_rounds):
        before_round = graph.key
        for name in names:
            start = time.perf_counter()
            count = len(graph.nodes())
            graph = table[name](graph)
            if check:
                graph.check()
            results.append(PassResult(name, count, len(graph.nodes()), time.perf_counter() - start))
        if graph.key == before_round:
            break
    return graph, results
