"""What every search algorithm shares: its budget, its trace, and its signature.

Every algorithm is a function ``search(graph, rules, cost, budget) -> (graph, trace)``
(:data:`SearchFn`): ``rules`` is a :class:`~optimizer.rewrite.match.MatchIndex` of the rules it
may apply (axioms already left out), ``cost`` a node-additive
:class:`~optimizer.cost.CostModel`, ``budget`` a :class:`Budget`. It returns the cheapest
graph it found (never costlier than the input) and a :class:`SearchTrace` of the rewrites that
lead from the input to it. Algorithms are deterministic for a given ``budget.seed`` and stop at
``budget.time_limit``.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

from optimizer.cost import CostModel
from optimizer.ir import Graph
from optimizer.rewrite.match import MatchIndex


@dataclass(frozen=True)
class Budget:
    """Limits of one search.

    - ``time_limit``: seconds of search (wall clock);
    - ``max_steps``: rewrites applied (greedy) or graphs expanded (backtracking, OCGGS);
    - ``max_depth``: longest substitution sequence (OCGGS's K);
    - ``alpha``: TASO's relaxation: graphs up to ``alpha`` x the best cost stay in the queue;
    - ``max_enodes``/``max_iterations``: equality saturation's e-graph size and iterations;
    - ``sample_size``: OCGGS's sampling heuristic keeps this many graphs per level;
    - ``seed``: for algorithms that sample.
    """

    time_limit: float = 30.0
    max_steps: int = 1000
    max_depth: int = 6
    alpha: float = 1.05
    max_enodes: int = 20_000
    max_iterations: int = 20
    sample_size: int = 20
    seed: int = 0

    def deadline(self, start: float | None = None) -> float:
        """The perf_counter value at which the search must stop."""
        return (time.perf_counter() if start is None else start) + self.time_limit


@dataclass(frozen=True)
class TraceStep:
    """One applied rewrite: the rule, the nodes it matched (names, or ``op#serial``) and the
    graph's cost before and after it."""

    rule: str
    nodes_matched: list[str]
    cost_before: float
    cost_after: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchTrace:
    """What a search did.

    ``steps`` lead from the input to the returned graph, in order; ``explored`` counts what
    the algorithm examined (graphs, or e-nodes for equality saturation); ``stopped_by`` says
    why it ended ("fixed point", "time limit", "budget", "exhausted", "saturated", or
    "lookahead limit": OCGGS's lookahead used its share of the time, the search's own limit
    not reached).
    """

    algorithm: str
    cost_before: float
    cost_after: float
    seconds: float = 0.0
    explored: int = 0
    stopped_by: str = "fixed point"
    steps: list[TraceStep] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "steps"}
        data["steps"] = [s.to_json() for s in self.steps]
        return data


SearchFn = Callable[[Graph, MatchIndex, CostModel, Budget], tuple[Graph, SearchTrace]]


# ------------------------------------------------------------------ opt-in recording


@dataclass(frozen=True)
class Checkpoint:
    """One concrete transition of a recorded search: ``kind`` is the algorithm whose ``steps``
    (its trace's, in order) lead from ``before`` to ``after``, or ``"fold"`` for the constant
    folding between rounds (no steps)."""

    kind: str
    before: Graph
    after: Graph
    steps: tuple[TraceStep, ...] = ()


_RECORDER: ContextVar[list[Checkpoint] | None] = ContextVar("graphopt_checkpoints", default=None)


@contextmanager
def recording() -> Iterator[list[Checkpoint]]:
    """Record, in the list this yields, every search call and fold that runs in this context
    (for explanations of a run; it keeps those graphs alive, so nothing records by default)."""
    checkpoints: list[Checkpoint] = []
    token = _RECORDER.set(checkpoints)
    try:
        yield checkpoints
    finally:
        _RECORDER.reset(token)


def record(kind: str, before: Graph, after: Graph, steps: tuple[TraceStep, ...] = ()) -> None:
    """Append a :class:`Checkpoint` when a :func:`recording` is active (else do nothing)."""
    checkpoints = _RECORDER.get()
    if checkpoints is not None:
        checkpoints.append(Checkpoint(kind, before, after, tuple(steps)))


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (as it was before, after it).

    A search allocates millions of small objects that live for a while (graphs in a queue,
    e-nodes, match states), and each burst of allocations makes the collector scan every
    live object of the process again: with it on, a third of TASO's 60 s on NASNet-A
    (16 of 60 s) and a quarter of equality saturation's time went to scans that found
    little garbage. The IR's nodes and values form no reference cycles
    (:attr:`optimizer.ir.Node.outputs`), so a search's data is freed by reference counting;
    the few cycles left (closures of recursive helpers) wait for the next collection."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
