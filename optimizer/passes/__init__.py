"""Graph passes and the pipeline that runs them with statistics and IR checks."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from optimizer.ir import Graph
from optimizer.passes.cleanup import eliminate_identities
from optimizer.passes.fold import DEFAULT_SIZE_LIMIT, fold_constants
from optimizer.passes.rewrite import apply_rules, apply_rules_pass

__all__ = [
    "DEFAULT_SIZE_LIMIT",
    "PASSES",
    "PassResult",
    "SEARCH_ALGORITHMS",
    "SearchSettings",
    "apply_rules",
    "apply_rules_pass",
    "eliminate_identities",
    "fold_constants",
    "run_passes",
]

Pass = Callable[[Graph], Graph]

#: Search algorithms the apply-rules pass offers (see :mod:`optimizer.search`).
SEARCH_ALGORITHMS: tuple[str, ...] = (
    "auto", "greedy", "taso", "ocggs", "ocggs-prune", "ocggs-sample", "eqsat",
)  # fmt: skip


@dataclass(frozen=True)
class SearchSettings:
    """How the apply-rules pass searches: the algorithm, the time limit shared by all of its
    rounds, the cost model (None: the analytic model with onnxruntime's fusions priced in)
    and the seed."""

    algorithm: str = "auto"
    time_limit: float = 10.0
    cost: Any = None
    seed: int = 0


@dataclass(frozen=True)
class PassResult:
    """What one pass did: node counts before and after, and seconds taken."""

    name: str
    nodes_before: int
    nodes_after: int
    seconds: float
    #: The search trace of an apply-rules run (:meth:`SearchTrace.to_json`), else None.
    trace: dict[str, Any] | None = field(default=None, compare=False)


def _passes(size_limit: int) -> dict[str, Pass]:
    return {
        "eliminate-identity": eliminate_identities,
        "fold-constants": lambda g: fold_constants(g, size_limit=size_limit),
        "apply-rules": lambda g: apply_rules_pass(g, fold_size_limit=size_limit),
    }


def _search_pass(
    graph: Graph, size_limit: int, settings: SearchSettings, time_left: float
) -> tuple[Graph, dict[str, Any] | None]:
    from optimizer.passes.rewrite import default_rules
    from optimizer.search import Budget, run_search

    rules = default_rules()
    if not rules.rules:
        return graph, None
    result, trace = run_search(
        graph, rules, name=settings.algorithm, cost=settings.cost,
        budget=Budget(time_limit=max(time_left, 0.0), seed=settings.seed),
        fold=lambda g: fold_constants(g, size_limit=size_limit),
    )  # fmt: skip
    return result, trace.to_json()


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
    search: SearchSettings | None = None,
) -> tuple[Graph, list[PassResult]]:
    """Run the named passes to a fixed point (at most ``max_rounds`` rounds).

    With ``check`` the IR checker runs after every pass, so a broken pass is
    caught where it broke the graph. With ``search``, the apply-rules pass runs that search
    (all its runs share ``search.time_limit``) and its PassResult carries the trace; without,
    it is the plain greedy pass.
    """
    table = _passes(fold_size_limit)
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown pass {unknown[0]!r}; passes: {', '.join(table)}")
    results: list[PassResult] = []
    deadline = time.perf_counter() + (search.time_limit if search is not None else 0.0)
    for _ in range(max_rounds):
        before_round = graph.key
        for name in names:
            start = time.perf_counter()
            count = len(graph.nodes())
            trace = None
            if name == "apply-rules" and search is not None:
                graph, trace = _search_pass(graph, fold_size_limit, search, deadline - start)
            else:
                graph = table[name](graph)
            if check:
                graph.check()
            seconds = time.perf_counter() - start
            results.append(PassResult(name, count, len(graph.nodes()), seconds, trace))
        if graph.key == before_round:
            break
    return graph, results
