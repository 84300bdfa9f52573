"""Extraction: the cheapest acyclic graph an e-graph holds, by ILP (HiGHS) or greedily.

An :class:`ExtractionProblem` is the e-graph reduced to what extraction needs: per e-node a
cost and the classes it reads, per class its candidate e-nodes, the root classes. A *choice*
maps each needed class to one of its e-nodes; its **DAG cost** (:func:`dag_cost`) sums the
cost of every e-node the roots reach through the choice once, however many classes read it,
so shared subgraphs count once (the graph's real cost), unlike the tree cost that egg's
greedy extractor minimises.

- :func:`ilp_choice` solves Tensat's formulation (Yang et al., MLSys 2021) with
  ``scipy.optimize.milp`` (HiGHS): a binary per (class, member e-node), a binary per e-node
  with several outputs (computed once, provides each), cost on the e-node; each root class has
  one chosen member, every other class at most one; a chosen e-node needs each class it reads.
  Acyclicity: every two-cycle (``c`` reads ``d`` and ``d`` reads ``c``) is cut upfront, longer
  cycles lazily (solve, forbid each cycle the solution closes, solve again: an acyclic solution
  of the relaxation is optimal); only if that does not settle in a few rounds does Tensat's
  order-variable formulation take over (a real order value per class, ``t_c >= t_d + 1``
  whenever the chosen member of ``c`` reads ``d``, big-M relaxed otherwise), with order
  variables only inside strongly connected components of the class graph, since an edge
  between components can never close a cycle. The big-M relaxation is weak, which is why the
  cuts come first (on NasRNN's e-graph: 1.4 s instead of 15 s to the same optimum).
- :func:`greedy_choice` is egg's bottom-up extractor: each class takes the member of least
  tree cost, iterated to a fixed point (acyclic whenever costs are non-negative).
- :func:`solve` prunes dominated members (:func:`prune_dominated`; a member that reads a
  superset of another's classes, constants and inputs aside, at no lower cost), drops the
  members that could close a cycle (:func:`break_cycles`, so the ILP needs none of the
  constraints above, whose relaxation HiGHS could not close on NasRNN's e-graph in a minute),
  runs greedy always, the ILP when asked and within its time limit (first over the members
  its linear relaxation uses, :func:`lp_support`, which HiGHS solves in a fraction of a
  second, then whole), and keeps the cheapest valid choice by DAG cost. The ILP says "a
  chosen member needs each class it reads" once per (class, kid) over the class's members,
  which exclude each other (per member, the relaxation let a kid be half chosen under a
  class with two members reading it).

:mod:`~optimizer.search.extract_egraph` builds a problem from an e-graph and turns a choice
back into an IR :class:`~optimizer.ir.Graph`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ExtractionError",
    "ExtractionProblem",
    "Extraction",
    "dag_cost",
    "greedy_choice",
    "ilp_choice",
    "lp_support",
    "prune_dominated",
    "solve",
]


def milp(*args, **kwargs):
    """``scipy.optimize.milp``, imported on first use: importing scipy.optimize takes longer
    (0.3-0.6 s) than a whole search on a small graph, which often needs no ILP."""
    from scipy.optimize import milp as scipy_milp

    return scipy_milp(*args, **kwargs)


#: Relative optimality gap HiGHS may stop at (small: extraction problems are cheap to close).
MIP_REL_GAP = 1e-6


class ExtractionError(RuntimeError):
    """A choice that cannot be turned into a graph (a cycle, a class without a choice)."""


@dataclass
class ExtractionProblem:
    """What extraction needs of an e-graph (indices are local to the problem).

    - ``costs[n]``: cost of e-node ``n`` (counted once however often it is used);
    - ``kids[n]``: the distinct classes e-node ``n`` reads;
    - ``members[c]``: the e-nodes that may provide class ``c`` (a multi-output e-node appears
      in the class of each output it may provide);
    - ``roots``: classes that must be provided;
    - ``pinned``: classes whose provider is fixed, when they are needed (class -> e-node);
    - ``original``: e-nodes of the input graph, which win ties (see :func:`prefer_original`).
    """

    costs: list[float]
    kids: list[tuple[int, ...]]
    members: list[list[int]]
    roots: list[int]
    pinned: dict[int, int] = field(default_factory=dict)
    original: frozenset[int] = frozenset()


@dataclass
class Extraction:
    """A solved problem: ``choice`` (class -> e-node, for the classes the roots need), its DAG
    ``cost``, the ``method`` that found it ("ilp" or "greedy") and the ILP's outcome."""

    choice: dict[int, int]
    cost: float
    method: str
    ilp_status: str
    ilp_seconds: float
    seconds: float


# ------------------------------------------------------------------ costs of a choice


def needed(problem: ExtractionProblem, choice: Mapping[int, int]) -> list[int]:
    """Classes the roots reach through ``choice``, each after the classes it reads
    (raises :class:`ExtractionError` on a cycle or a needed class without a choice)."""
    order: list[int] = []
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    for root in problem.roots:
        stack = [(root, False)]
        while stack:
            c, done = stack.pop()
            if done:
                state[c] = 2
                order.append(c)
                continue
            mark = state.get(c)
            if mark == 2:
                continue
            if mark == 1:
                raise ExtractionError(f"the choice is cyclic through class {c}")
            if c not in choice:
                raise ExtractionError(f"class {c} is needed but has no choice")
            state[c] = 1
            stack.append((c, True))
            stack.extend((k, False) for k in problem.kids[choice[c]] if state.get(k) != 2)
    return order


def dag_cost(problem: ExtractionProblem, choice: Mapping[int, int]) -> float:
    """Sum of the costs of the distinct e-nodes the roots reach through ``choice``."""
    used = {choice[c] for c in needed(problem, choice)}
    return float(sum(problem.costs[n] for n in sorted(used)))


# ------------------------------------------------------------------ greedy


def greedy_choice(problem: ExtractionProblem) -> dict[int, int]:
    """egg's bottom-up extraction: per class the member of least tree cost (cost of the
    e-node plus the best costs of the classes it reads), to a fixed point. With non-negative
    costs a class only switches to a strictly cheaper member, which keeps the choice acyclic.
    """
    n_classes = len(problem.members)
    best = [math.inf] * n_classes
    choice: dict[int, int] = {}
    provides: dict[int, list[int]] = {}
    for c, members in enumerate(problem.members):
        pinned = problem.pinned.get(c)
        for n in [pinned] if pinned is not None else members:
            provides.setdefault(n, []).append(c)
    order = sorted(provides)
    changed = True
    while changed:
        changed = False
        for n in order:
            total = problem.costs[n] + sum(best[k] for k in problem.kids[n])
            if total == math.inf:
                continue
            for c in provides[n]:
                if total < best[c]:
                    best[c] = total
                    choice[c] = n
                    changed = True
    return choice


# ------------------------------------------------------------------ ILP


def _components(problem: ExtractionProblem) -> list[int]:
    """Strongly connected component of each class in the graph class -> classes its members
    read (iterative Tarjan)."""
    n = len(problem.members)
    succ = [sorted({k for m in members for k in problem.kids[m]}) for members in problem.members]
    index = [-1] * n
    low = [0] * n
    comp = [-1] * n
    on_stack = [False] * n
    stack: list[int] = []
    counter = 0
    n_comp = 0
    for start in range(n):
        if index[start] != -1:
            continue
        work = [(start, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack[v] = True
            recurse = False
            while i < len(succ[v]):
                w = succ[v][i]
                i += 1
                if index[w] == -1:
                    work.append((v, i))
                    work.append((w, 0))
                    recurse = True
                    break
                if on_stack[w]:
                    low[v] = min(low[v], index[w])
            if recurse:
                continue
            if low[v] == index[v]:
                while True:
                    w = stack.pop()
                    on_stack[w] = False
                    comp[w] = n_comp
                    if w == v:
                        break
                n_comp += 1
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return comp


def _reachable(problem: ExtractionProblem) -> set[int]:
    """Classes the roots reach through any member."""
    seen: set[int] = set()
    stack = list(problem.roots)
    while stack:
        c = stack.pop()
        if c in seen:
            continue
        seen.add(c)
        for n in problem.members[c]:
            stack.extend(k for k in problem.kids[n] if k not in seen)
    return seen


class _Rows:
    """A sparse constraint matrix built row by row: ``lower <= A x <= upper``."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.lower: list[float] = []
        self.upper: list[float] = []

    def add(self, entries: Sequence[tuple[int, float]], lo: float, hi: float) -> None:
        r = len(self.lower)
        for col, val in entries:
            self.rows.append(r)
            self.cols.append(col)
            self.vals.append(val)
        self.lower.append(lo)
        self.upper.append(hi)

    def constraint(self, n_vars: int):
        from scipy.optimize import LinearConstraint
        from scipy.sparse import coo_array

        matrix = coo_array(
            (self.vals, (self.rows, self.cols)), shape=(len(self.lower), n_vars)
        ).tocsr()
        return LinearConstraint(matrix, np.array(self.lower), np.array(self.upper))


#: Rounds of cycle cuts tried before the order-variable formulation takes over.
MAX_CUT_ROUNDS = 12


def lp_support(problem: ExtractionProblem, time_limit: float) -> ExtractionProblem | None:
    """The problem restricted to the members that the ILP's linear relaxation uses, and the
    input's and pinned ones (None when the LP failed). Its ILP is a fraction of the size and
    HiGHS solves it in a fraction of a second, where the whole one can take seconds to find
    a good solution (NasRNN's e-graph: 712 of 1305 members, 26% less cost in 0.3 s, where
    the whole ILP's incumbent after 2.4 s on a loaded machine was the greedy one, 1%)."""
    support = ilp_choice(problem, time_limit, relaxed=True)[0]
    if support is None:
        return None
    keep = set(support) | set(problem.pinned.items())
    members = [
        [n for n in ms if (c, n) in keep or n in problem.original]
        for c, ms in enumerate(problem.members)
    ]
    return ExtractionProblem(
        problem.costs, problem.kids, members, problem.roots, problem.pinned, problem.original
    )


def ilp_choice(
    problem: ExtractionProblem, time_limit: float, *, relaxed: bool = False
) -> tuple[dict[int, int] | None, str]:
    """Optimal choice by integer linear programming (see the module docstring); returns the
    choice (None when HiGHS found none) and HiGHS's outcome in words. ``relaxed`` solves the
    linear relaxation once instead and returns every membership it uses, as a dict whose
    keys are the (class, e-node) pairs (for :func:`lp_support`).

    Acyclicity is first enforced lazily: the ILP without order variables is solved, and each
    cycle its solution closes is forbidden by a cut (its memberships cannot all be chosen),
    for up to :data:`MAX_CUT_ROUNDS` rounds; an acyclic solution of that relaxation is optimal.
    When cuts do not settle it, Tensat's order-variable formulation (with the cuts found)
    solves it in the time left. The relaxation is much tighter than the big-M order
    constraints, so most problems finish in the first rounds.
    """
    deadline = time.perf_counter() + time_limit
    live = _reachable(problem)
    memberships = [(c, n) for c in sorted(live) for n in problem.members[c]]
    if not memberships:
        return None, "empty problem"
    n_z = len(memberships)
    index = {m: j for j, m in enumerate(memberships)}
    provided: dict[int, list[int]] = {}  # e-node -> its membership variables
    for j, (_, n) in enumerate(memberships):
        provided.setdefault(n, []).append(j)
    # An e-node with one membership is computed exactly when that membership is chosen; one
    # with several gets its own "computed" variable, which carries its cost once.
    computed: dict[int, int] = {}
    n_vars = n_z
    for n in sorted(provided):
        if len(provided[n]) == 1:
            computed[n] = provided[n][0]
        else:
            computed[n] = n_vars
            n_vars += 1
    by_class: dict[int, list[int]] = {}
    for j, (c, _) in enumerate(memberships):
        by_class.setdefault(c, []).append(j)

    # A continuous variable per class, y_c = (sum of its chosen memberships), keeps the rows
    # that say "a computed e-node needs each class it reads" at two entries each, however many
    # members the class has (dense rows made HiGHS's LPs slow on large e-graphs).
    classes = sorted(live)
    chosen = {c: n_vars + i for i, c in enumerate(classes)}
    n_base = n_vars + len(classes)
    base = _Rows()
    roots = set(problem.roots)
    for c in classes:
        js = by_class.get(c, [])
        if c in roots and not js:
            return None, f"root class {c} has no member"
        base.add([(j, 1.0) for j in js] + [(chosen[c], -1.0)], 0.0, 0.0)
    # A chosen member needs every class it reads. The members of one class exclude each
    # other, so the memberships of a class that read class k add up to at most y_k: one row
    # per (class, kid) rather than per (member, kid). Without it the relaxation halves a
    # kid's share at every class with two members reading it (on NasRNN's e-graph the LP
    # bound was an eighth of the optimum and HiGHS never closed the gap).
    for c in classes:
        readers: dict[int, list[int]] = {}
        for j in by_class.get(c, []):
            for k in problem.kids[memberships[j][1]]:
                readers.setdefault(k, []).append(j)
        for k in sorted(readers):
            base.add([(j, 1.0) for j in readers[k]] + [(chosen[k], -1.0)], -np.inf, 0.0)
    for n in sorted(provided):
        if len(provided[n]) > 1:  # computed once, it provides each of its classes
            for k in problem.kids[n]:
                base.add([(computed[n], 1.0), (chosen[k], -1.0)], -np.inf, 0.0)
            for j in provided[n]:
                base.add([(j, 1.0), (computed[n], -1.0)], -np.inf, 0.0)
    # Costs scaled by a power of two (exact) into a range HiGHS handles without warnings.
    top = max((problem.costs[n] for n in computed), default=0.0)
    scale = 2.0 ** -max(0, math.ceil(math.log2(top / 2**16))) if top > 0 else 1.0
    objective = np.zeros(n_base)
    for n, var in computed.items():
        objective[var] = problem.costs[n] * scale
    lb = np.zeros(n_base)
    for c in roots & live:
        lb[chosen[c]] = 1.0
    ub = np.ones(n_base)
    for c, n in problem.pinned.items():  # a pinned class may use no other member
        for j in by_class.get(c, []):
            if memberships[j][1] != n:
                ub[j] = 0.0

    def run(rows: list[_Rows], n_all: int, upper: np.ndarray):
        from scipy.optimize import Bounds

        integrality = np.zeros(n_all)
        integrality[:n_vars] = 0 if relaxed else 1
        left = deadline - time.perf_counter()
        if left <= 0:
            return None, "time limit"
        res = milp(
            np.concatenate([objective, np.zeros(n_all - n_base)]),
            integrality=integrality,
            bounds=Bounds(np.concatenate([lb, np.zeros(n_all - n_base)]), upper),
            constraints=[r.constraint(n_all) for r in rows if r.lower],
            options={"disp": False, "time_limit": left, "mip_rel_gap": MIP_REL_GAP},
        )
        status = {0: "optimal", 1: "time limit", 2: "infeasible", 3: "unbounded"}.get(
            res.status, f"failed ({res.message})"
        )
        if res.x is None:
            return None, status
        if relaxed:
            return {j: 0 for j in np.flatnonzero(res.x[:n_z] > 1e-6)}, status
        choice: dict[int, int] = {}
        for j in np.flatnonzero(res.x[:n_z] > 0.5):
            c, n = memberships[int(j)]
            choice.setdefault(c, n)
        return choice, status

    cuts = _Rows()
    for j, (c, n) in enumerate(memberships):  # short cycles are common: cut them all upfront
        for k in problem.kids[n]:
            for jj in by_class.get(k, []) if k > c else ():
                if c in problem.kids[memberships[jj][1]]:
                    cuts.add([(j, 1.0), (jj, 1.0)], -np.inf, 1.0)
    if relaxed:
        used, status = run([base, cuts], n_base, ub)
        if used is None:
            return None, status
        return {memberships[int(j)]: 1 for j in used}, status  # type: ignore[misc]
    for rounds in range(MAX_CUT_ROUNDS):
        choice, status = run([base, cuts], n_base, ub)
        if choice is None or status != "optimal":
            return choice, status
        cycles = _cycles(problem, choice)
        if not cycles:
            return choice, status if rounds == 0 else f"{status} ({rounds} rounds of cycle cuts)"
        for cycle in cycles:  # these memberships cannot all be chosen
            cuts.add([(index[m], 1.0) for m in cycle], -np.inf, len(cycle) - 1)

    # Tensat's formulation: an order value per class of a strongly connected component,
    # t_c >= t_k + 1 whenever the chosen member of c reads k (relaxed by big-M otherwise).
    comp = _components(problem)
    size: dict[int, int] = {}
    for c in live:
        size[comp[c]] = size.get(comp[c], 0) + 1
    ordered = [c for c in sorted(live) if size[comp[c]] > 1]
    order_var = {c: n_base + i for i, c in enumerate(ordered)}
    n_all = n_base + len(ordered)
    big = max(size.values(), default=0) + 1  # order values lie in [0, largest component]
    order = _Rows()
    for j, (c, n) in enumerate(memberships):
        if c not in order_var:
            continue
        for k in problem.kids[n]:
            if comp[k] == comp[c]:  # t_c - t_k - big * z >= 1 - big
                order.add(
                    [(order_var[c], 1.0), (order_var[k], -1.0), (j, -float(big))], 1 - big, np.inf
                )
    upper = np.concatenate([ub, np.full(n_all - n_base, float(big))])
    choice, status = run([base, cuts, order], n_all, upper)
    return choice, f"{status} (order variables)"


def _cycles(problem: ExtractionProblem, choice: Mapping[int, int]) -> list[list[tuple[int, int]]]:
    """Cycles among the choices the roots reach, each as its (class, e-node) memberships."""
    cycles: list[list[tuple[int, int]]] = []
    state: dict[int, int] = {}
    for root in problem.roots:
        path: list[int] = []
        stack: list[tuple[int, int]] = [(root, 0)]
        while stack:
            c, i = stack.pop()
            if i == 0:
                if state.get(c) == 2:
                    continue
                if state.get(c) == 1:  # a back edge closes a cycle: path from c to the top
                    loop = path[path.index(c) :]
                    cycles.append([(d, choice[d]) for d in loop])
                    continue
                if c not in choice:
                    continue
                state[c] = 1
                path.append(c)
            kids = problem.kids[choice[c]]
            if i < len(kids):
                stack.append((c, i + 1))
                stack.append((kids[i], 0))
            else:
                state[c] = 2
                path.pop()
    return cycles


# ------------------------------------------------------------------ both


def prune_dominated(problem: ExtractionProblem) -> ExtractionProblem:
    """The problem without members that another member of their class dominates: no more
    costly and reading a subset of the classes (equal ones: the lower index stays). Swapping a
    dominated member for its dominator never costs more and cannot close a cycle, so optimal
    choices survive. Members that provide several classes are kept (their cost may be paid
    for another class already), as are pinned classes."""
    uses: dict[int, int] = {}
    for members in problem.members:
        for n in members:
            uses[n] = uses.get(n, 0) + 1
    free = _free_leaves(problem)
    kid_sets = [frozenset(k for k in kids if k not in free) for kids in problem.kids]
    costs = problem.costs
    pruned = []
    for c, members in enumerate(problem.members):
        if c in problem.pinned or len(members) < 2:
            pruned.append(list(members))
            continue
        keep = []
        for n in members:
            dominated = uses[n] == 1 and any(
                m != n
                and costs[m] <= costs[n]
                and kid_sets[m] <= kid_sets[n]
                and (costs[m] < costs[n] or kid_sets[m] < kid_sets[n] or m < n)
                for m in members
            )
            if not dominated:
                keep.append(n)
        pruned.append(keep)
    return ExtractionProblem(
        problem.costs, problem.kids, pruned, problem.roots, problem.pinned, problem.original
    )


def _free_leaves(problem: ExtractionProblem) -> set[int]:
    """Classes provided at no cost by an e-node that reads nothing (a constant, an input):
    always available, so reading one or not makes no difference to a member's worth."""
    return {
        c
        for c, members in enumerate(problem.members)
        if any(problem.costs[n] == 0 and not problem.kids[n] for n in members)
    }


def break_cycles(problem: ExtractionProblem) -> ExtractionProblem:
    """The problem without the members that could close a cycle: every choice of it is acyclic.

    Cycles lie within strongly connected components of the class graph, which are small in
    practice (a class and the merged node it can also be sliced from). Within each one the
    members are taken in order, pinned and original ones first (so the input graph stays
    a choice), then by index (the order rewrites created them), and a member is kept only if
    no class it reads already reaches its own class through the members kept before it. This
    gives up some alternatives (a merged node that could also be assembled from its parts
    keeps only its first form), but the ILP then needs no acyclicity constraints, whose
    relaxation is so weak that HiGHS could not close the gap on NasRNN's e-graph in a minute.
    """
    comp = _components(problem)
    pinned = set(problem.pinned.values())
    inner: dict[int, list[tuple[int, int]]] = {}  # component -> memberships inside it
    for c, members in enumerate(problem.members):
        for n in members:
            if any(comp[k] == comp[c] for k in problem.kids[n]):
                inner.setdefault(comp[c], []).append((c, n))
    if not inner:
        return problem
    dropped: set[tuple[int, int]] = set()
    for component in sorted(inner):
        items = sorted(
            inner[component],
            key=lambda cn: (cn[1] not in pinned, cn[1] not in problem.original, cn[1], cn[0]),
        )
        reads: dict[int, set[int]] = {}  # class -> classes of the component its kept members read
        for c, n in items:
            kids = [k for k in problem.kids[n] if comp[k] == component]
            if any(_reaches(reads, k, c) for k in kids):
                dropped.add((c, n))
            else:
                reads.setdefault(c, set()).update(kids)
    members = [[n for n in ms if (c, n) not in dropped] for c, ms in enumerate(problem.members)]
    return ExtractionProblem(
        problem.costs, problem.kids, members, problem.roots, problem.pinned, problem.original
    )


def _reaches(reads: Mapping[int, set[int]], start: int, goal: int) -> bool:
    """Whether ``goal`` is ``start`` or lies below it through ``reads``."""
    seen, stack = {start}, [start]
    while stack:
        c = stack.pop()
        if c == goal:
            return True
        for k in reads.get(c, ()):
            if k not in seen:
                seen.add(k)
                stack.append(k)
    return False


#: Relative slack under which two DAG costs count as a tie (cost sums are float sums).
TIE_TOLERANCE = 1e-9


def prefer_original(problem: ExtractionProblem, choice: dict[int, int]) -> dict[int, int]:
    """``choice`` with rewritten members swapped back to the input's own e-node wherever that
    costs no more.

    A rewrite that does not lower the cost only changes how floating-point results round
    (``(x*y)*z`` and ``x*(y*z)`` differ in the last bits, and the drift compounds over
    layers), so the input's form wins every tie. Classes a swap newly needs take their
    original member too, else the greedy one. Swaps that would close a cycle are skipped.
    """
    if not problem.original:
        return choice
    fallback = greedy_choice(problem)
    for c, members in enumerate(problem.members):
        own = [n for n in members if n in problem.original]
        if own and c not in problem.pinned:
            fallback[c] = own[0]
    best = dict(choice)
    best_cost = dag_cost(problem, best)
    for c in needed(problem, choice):
        if best.get(c) in problem.original or c in problem.pinned:
            continue
        for n in (m for m in problem.members[c] if m in problem.original):
            trial = {**fallback, **best, c: n}
            try:
                order = needed(problem, trial)
            except ExtractionError:
                continue
            trial = {k: trial[k] for k in order}
            # dag_cost's sum, without walking the choice a second time
            cost = float(sum(problem.costs[m] for m in sorted(set(trial.values()))))
            if cost <= best_cost + TIE_TOLERANCE * abs(best_cost):
                best, best_cost = trial, cost
                break
    return best


def solve(problem: ExtractionProblem, time_limit: float, *, use_ilp: bool = True) -> Extraction:
    """Greedy extraction, then the ILP (when ``use_ilp`` and time is left of ``time_limit``
    seconds), both on the problem without dominated members; the valid choice of least DAG
    cost wins, the greedy one on ties and whenever the ILP fails.

    The ILP solves the problem without the members that could close a cycle
    (:func:`break_cycles`), unless that leaves a root without an acyclic choice; first
    restricted to its linear relaxation's support (:func:`lp_support`), then whole in the
    time left. ``ilp_status`` is the whole ILP's outcome."""
    start = time.perf_counter()
    problem = prune_dominated(problem)
    choice = greedy_choice(problem)
    cost = dag_cost(problem, choice)
    acyclic = break_cycles(problem)
    if acyclic is not problem:
        try:
            pruned_choice = greedy_choice(acyclic)
            pruned_cost = dag_cost(acyclic, pruned_choice)
        except ExtractionError:  # a root lost every member: keep the cycle constraints
            acyclic = problem
        else:
            if pruned_cost < cost:
                choice, cost = pruned_choice, pruned_cost
    method, status, ilp_seconds = "greedy", "not run", 0.0
    left = time_limit - (time.perf_counter() - start)  # the time limit covers greedy too
    if use_ilp and left > 0:
        t0 = time.perf_counter()
        deadline = t0 + left
        try:  # first the ILP over the LP's support (fast, good), then the whole one
            support = lp_support(acyclic, left)
            first = None if support is None else ilp_choice(support, left)[0]
            ilp, status = ilp_choice(acyclic, deadline - time.perf_counter())
        except Exception as exc:  # noqa: BLE001 - a solver failure falls back to greedy
            first, ilp, status = None, None, f"error: {type(exc).__name__}: {exc}"
        ilp_seconds = time.perf_counter() - t0
        for found in (first, ilp):
            if found is None:
                continue
            try:
                ilp_cost = dag_cost(problem, found)
            except ExtractionError as exc:
                status = f"{status}, invalid: {exc}"
            else:
                if ilp_cost <= cost:
                    choice, cost, method = found, ilp_cost, "ilp"
    elif use_ilp:
        status = "skipped: no time left"
    choice = prefer_original(problem, choice)
    cost = dag_cost(problem, choice)
    return Extraction(choice, cost, method, status, ilp_seconds, time.perf_counter() - start)
