"""Every shipped rule is proved and numerically checked; every axiom and fact holds."""

from __future__ import annotations

import numpy as np
import pytest

import optimizer.onnx_io  # noqa: F401 - installs ONNX shape inference
from optimizer.rewrite import load_rules
from optimizer.verify import verify_rule
from optimizer.verify.allshapes import AXIOM_FAMILY, default_axioms, prove_all_shapes
from optimizer.verify.facts import FACTS

RULES = load_rules()
AXIOMS = [r for r in RULES if r.family == AXIOM_FAMILY]


@pytest.fixture(scope="module")
def library():
    """Every shipped rule verified once, as ``graphopt rules verify`` does (two workers, no
    cache): results by name."""
    from optimizer.verify.library import verify_rules

    return {r.name: r for r in verify_rules(RULES, jobs=2, use_cache=False)}


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_shipped_rule_is_proved_and_checked(rule, library):
    result = library[rule.name]
    assert result.status == "proved", f"{result.status}: {result.message}\n{result.counterexample}"
    assert result.method in ("bounded", "all-shapes")
    assert result.numeric == "ok" or result.numeric.startswith("unavailable"), result.numeric
    assert result.instances
    assert result.numeric_instances >= min(4, len(result.instances)), result.message


def test_library_has_at_least_100_rules_besides_axioms():
    assert len([r for r in RULES if r.family != AXIOM_FAMILY]) >= 100


def test_every_axiom_is_proved_on_several_shapes_and_numerically(library):
    assert len(AXIOMS) >= 15
    for axiom in AXIOMS:
        result = library[axiom.name]  # axioms are verified without the all-shape layer
        assert result.ok and result.numeric == "ok", (axiom.name, result.message)
        assert len(result.instances) >= 2, (axiom.name, result.instances)
        assert result.numeric_instances >= 24, (axiom.name, result.message)


def test_axioms_are_usable_by_the_all_shape_prover():
    from optimizer.verify.allshapes import _World, axiom_formulas

    assert len(axiom_formulas(list(default_axioms()), _World())) >= len(AXIOMS) - 2


@pytest.mark.parametrize("fact", FACTS, ids=[f.name for f in FACTS])
def test_every_uninterpreted_function_fact_holds_numerically(fact):
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert fact.check(rng), fact.statement


def test_all_shape_prover_refuses_what_the_axioms_do_not_give():
    from optimizer.rewrite.rule import parse_rules

    wrong, right = parse_rules(
        """
rule relu-add-wrong:  # not an axiom consequence (and false)
    match: Relu(Add(x, y))
    rewrite: Add(Relu(x), Relu(y))

rule add-four-reordered:  # a consequence of associativity and commutativity
    match: Add(Add(a, b), Add(c, d))
    rewrite: Add(Add(d, b), Add(c, a))
""",
        family="t",
    )
    assert prove_all_shapes(wrong)[0] is False
    ok, why = prove_all_shapes(right)
    assert ok, why
    result = verify_rule(right)
    assert result.ok and result.method == "all-shapes"
