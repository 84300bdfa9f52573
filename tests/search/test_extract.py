"""Extraction from e-graphs (optimizer/search/extract.py) on hand-made and random problems.

- the ILP's choice costs exactly the brute-force optimum (least DAG cost over every acyclic
  choice) on random small problems, cycles included, and greedy's never costs less;
- a problem whose cheapest per-class choice is cyclic still extracts acyclic, by cycle cuts
  and by Tensat's order-variable formulation alike;
- DAG cost counts a shared e-node once (and a multi-output e-node once), which the ILP
  exploits where egg's tree-cost greedy extractor cannot;
- pinned classes keep their e-node; dominated members are pruned without losing the optimum;
- when ``milp`` fails, :func:`solve` falls back to the greedy choice.
"""

from __future__ import annotations

import itertools
import random

import pytest

from optimizer.search import extract
from optimizer.search.extract import (
    ExtractionError,
    ExtractionProblem,
    dag_cost,
    greedy_choice,
    ilp_choice,
    prune_dominated,
    solve,
)


def problem(nodes, members, roots, pinned=None) -> ExtractionProblem:
    """``nodes``: list of (cost, kid classes); ``members``: e-nodes per class."""
    return ExtractionProblem(
        costs=[float(c) for c, _ in nodes],
        kids=[tuple(k) for _, k in nodes],
        members=[list(m) for m in members],
        roots=list(roots),
        pinned=dict(pinned or {}),
    )


def brute_force(p: ExtractionProblem) -> float:
    """Least DAG cost over every choice of one member per class (invalid choices skipped)."""
    best = float("inf")
    for combo in itertools.product(*[m or [None] for m in p.members]):
        choice = {c: n for c, n in enumerate(combo) if n is not None}
        if any(p.pinned.get(c, n) != n for c, n in choice.items()):
            continue
        try:
            best = min(best, dag_cost(p, choice))
        except ExtractionError:
            continue  # cyclic, or a needed class without members
    return best


def random_problem(rng: random.Random) -> ExtractionProblem:
    """A small problem whose first class's first member reads only sources, so it has an
    acyclic solution; kids are drawn anywhere, so cycles are common."""
    n_classes = rng.randint(2, 6)
    nodes, members = [], [[] for _ in range(n_classes)]
    for c in range(n_classes):
        for _ in range(rng.randint(1, 3)):
            kids = rng.sample(range(n_classes), rng.randint(0, 2))
            nodes.append((rng.randint(0, 20), [k for k in kids if k != c]))
            members[c].append(len(nodes) - 1)
    if rng.random() < 0.3:  # a two-output e-node providing two classes
        a, b = rng.sample(range(n_classes), 2)
        nodes.append((rng.randint(0, 20), []))
        members[a].append(len(nodes) - 1)
        members[b].append(len(nodes) - 1)
    nodes.append((rng.randint(5, 40), []))  # a leaf alternative for the root: always feasible
    members[0].append(len(nodes) - 1)
    return problem(nodes, members, roots=[0] + ([1] if rng.random() < 0.5 else []))


# ------------------------------------------------------------------ optimality


def test_ilp_equals_brute_force_on_random_problems():
    rng = random.Random(0)
    checked = 0
    for _ in range(60):
        p = random_problem(rng)
        best = brute_force(p)
        if best == float("inf"):
            continue  # the second root may be unprovidable
        choice, status = ilp_choice(p, time_limit=10)
        assert choice is not None, status
        assert dag_cost(p, choice) == pytest.approx(best), status
        assert dag_cost(p, greedy_choice(p)) >= best - 1e-9
        assert solve(p, 10).cost == pytest.approx(best)
        checked += 1
    assert checked >= 40


def test_pruning_dominated_members_keeps_the_optimum():
    rng = random.Random(1)
    for _ in range(40):
        p = random_problem(rng)
        best = brute_force(p)
        if best == float("inf"):
            continue
        pruned = prune_dominated(p)
        assert sum(map(len, pruned.members)) <= sum(map(len, p.members))
        assert brute_force(pruned) == pytest.approx(best)


def test_dominated_member_is_pruned():
    # class 0: e-node 0 reads class 1 and costs 5; e-node 1 reads nothing and costs 3
    p = problem([(5, [1]), (3, []), (1, [])], [[0, 1], [2]], roots=[0])
    assert prune_dominated(p).members == [[1], [2]]


# ------------------------------------------------------------------ acyclicity


def _cyclic_problem():
    # class A (0): a1 = 1 + B, a2 = 10;  class B (1): b1 = 1 + A, b2 = 10.
    # Cheapest per class: a1 and b1, a cycle. Best acyclic: a2 alone (10).
    return problem([(1, [1]), (10, []), (1, [0]), (10, [])], [[0, 1], [2, 3]], roots=[0])


def test_cheapest_per_class_choice_is_cyclic_but_extraction_is_not():
    p = _cyclic_problem()
    with pytest.raises(ExtractionError):
        dag_cost(p, {0: 0, 1: 2})
    choice, status = ilp_choice(p, time_limit=10)
    assert status.startswith("optimal")
    assert dag_cost(p, choice) == 10.0
    assert dag_cost(p, greedy_choice(p)) == 10.0


def test_long_cycle_needs_cuts_or_order_variables(monkeypatch):
    # A -> B -> C -> A cheaply (no two-cycle), each class also has a costly leaf member.
    p = problem(
        [(1, [1]), (30, []), (1, [2]), (30, []), (1, [0]), (30, [])],
        [[0, 1], [2, 3], [4, 5]],
        roots=[0, 1, 2],
    )
    best = brute_force(p)
    assert best == 32.0  # one leaf breaks the cycle: 30 + 1 + 1
    choice, status = ilp_choice(p, time_limit=10)
    assert dag_cost(p, choice) == best
    assert "cycle cuts" in status
    monkeypatch.setattr(extract, "MAX_CUT_ROUNDS", 0)  # Tensat's formulation alone
    choice, status = ilp_choice(p, time_limit=10)
    assert "order variables" in status
    assert dag_cost(p, choice) == best


# ------------------------------------------------------------------ DAG costs


def test_dag_cost_counts_a_shared_node_once():
    # Two roots; each either reads the shared class S (cost 10 + S) or is a leaf (cost 70).
    # S costs 100. Tree costs: 110 vs 70 per root, so greedy picks both leaves (140);
    # the DAG optimum shares S: 10 + 10 + 100 = 120.
    nodes = [(10, [2]), (70, []), (10, [2]), (70, []), (100, [])]
    p = problem(nodes, [[0, 1], [2, 3], [4]], roots=[0, 1])
    assert dag_cost(p, {0: 0, 1: 2, 2: 4}) == 120.0
    assert dag_cost(p, greedy_choice(p)) == 140.0
    choice, _ = ilp_choice(p, time_limit=10)
    assert choice[0] == 0 and choice[1] == 2 and choice[2] == 4
    result = solve(p, 10)
    assert (result.method, result.cost) == ("ilp", 120.0)


def test_multi_output_node_is_paid_once():
    # e-node 0 provides classes 0 and 1 (two outputs) for 50; separate leaves cost 30 each.
    p = problem([(50, []), (30, []), (30, [])], [[0, 1], [0, 2]], roots=[0, 1])
    assert dag_cost(p, {0: 0, 1: 0}) == 50.0
    assert solve(p, 10).cost == 50.0


def test_pinned_class_keeps_its_node():
    p = problem([(5, []), (1, [])], [[0, 1]], roots=[0], pinned={0: 0})
    assert solve(p, 10).choice == {0: 0}
    assert greedy_choice(p) == {0: 0}


# ------------------------------------------------------------------ fallback


def test_greedy_fallback_when_milp_fails(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("solver unavailable")

    monkeypatch.setattr(extract, "milp", broken)
    p = _cyclic_problem()
    result = solve(p, 10)
    assert result.method == "greedy"
    assert "solver unavailable" in result.ilp_status
    assert result.cost == 10.0


def test_no_time_left_skips_the_ilp():
    result = solve(_cyclic_problem(), 0.0)
    assert result.method == "greedy" and result.ilp_status.startswith("skipped")


def test_ties_go_to_the_inputs_own_nodes():
    """(x*y)*z and x*(y*z) cost the same: the input's form stays (a tie only changes rounding),
    whichever member the solver picked; a strictly cheaper rewrite still wins."""
    # classes: 0 x, 1 y, 2 z, 3 x*y, 4 y*z, 5 the product; e-nodes 0-2 leaves,
    # 3 x*y, 4 y*z, 5 (x*y)*z (original), 6 x*(y*z) (rewritten)
    nodes = [(0, []), (0, []), (0, []), (1, [0, 1]), (1, [1, 2]), (1, [3, 2]), (1, [0, 4])]
    members = [
        [0],
        [1],
        [2],
        [3],
        [4],
        [6, 5],
    ]
    p = problem(nodes, members, roots=[5])
    p.original = frozenset({0, 1, 2, 3, 5})
    for use_ilp in (False, True):
        assert solve(p, 10.0, use_ilp=use_ilp).choice[5] == 5
    rewritten_cheaper = problem([*nodes[:4], (0.5, [1, 2]), *nodes[5:]], members, roots=[5])
    rewritten_cheaper.original = frozenset({0, 1, 2, 3, 5})
    assert solve(rewritten_cheaper, 10.0).choice[5] == 6


# ------------------------------------------------------------------ breaking cycles upfront


def _acyclic_everywhere(p: ExtractionProblem) -> bool:
    """No choice of one member per class (where it has any) is cyclic."""
    for combo in itertools.product(*[m or [None] for m in p.members]):
        choice = {c: n for c, n in enumerate(combo) if n is not None}
        try:
            dag_cost(p, choice)
        except ExtractionError as exc:
            if "cyclic" in str(exc):
                return False
    return True


def test_break_cycles_leaves_only_acyclic_choices_and_keeps_the_originals():
    rng = random.Random(2)
    cyclic = 0
    for _ in range(40):
        p = random_problem(rng)
        leaf = p.members[0][-1]  # the root's leaf alternative, as the input graph's node
        p = ExtractionProblem(p.costs, p.kids, p.members, p.roots, original=frozenset({leaf}))
        cyclic += not _acyclic_everywhere(p)
        broken = extract.break_cycles(p)
        assert _acyclic_everywhere(broken)
        assert leaf in broken.members[0]
        assert all(set(b) <= set(m) for b, m in zip(broken.members, p.members, strict=True))
    assert cyclic >= 10


def test_break_cycles_keeps_the_input_and_drops_what_reads_back():
    # class 0 (root): the input's n0 reads class 1; class 1: the input's n1 (costly) and a
    # rewrite's n2 that reads class 0 back (a merged node sliced, and assembled from its
    # slices); class 1 also has n3, a cheap rewrite that reads nothing above it.
    p = ExtractionProblem(
        costs=[1.0, 10.0, 1.0, 2.0],
        kids=[(1,), (), (0,), ()],
        members=[[0], [1, 2, 3]],
        roots=[0],
        original=frozenset({0, 1}),
    )
    assert extract.break_cycles(p).members == [[0], [1, 3]]
    assert solve(p, 10).cost == 3.0


def test_lp_support_keeps_what_the_relaxation_uses_and_the_input():
    rng = random.Random(3)
    for _ in range(30):
        p = random_problem(rng)
        leaf = p.members[0][-1]
        p = ExtractionProblem(p.costs, p.kids, p.members, p.roots, original=frozenset({leaf}))
        best = brute_force(p)
        support = extract.lp_support(p, 10)
        assert support is not None
        assert all(set(s) <= set(m) for s, m in zip(support.members, p.members, strict=True))
        assert leaf in support.members[0]
        choice, _ = ilp_choice(support, 10)
        if choice is not None:  # a choice of the restricted problem is one of the whole
            assert dag_cost(p, choice) >= best - 1e-9
        assert solve(p, 10).cost <= dag_cost(p, greedy_choice(p)) + 1e-9
