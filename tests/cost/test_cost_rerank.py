"""End-to-end re-ranking and the final guard, on a candidate that is slower by construction.

The slow model adds a chain of 200 Adds of a run-time input that no optimizer may remove, so
it does about 200 times the work of the fast one: the decisions below do not depend on how
loaded the machine is. No test asserts on a time.
"""

from __future__ import annotations

import numpy as np
import pytest
from cost_helpers import imported, onnx_chain_model

from optimizer.cost.rerank import GuardResult, Ranked, guard, rerank
from optimizer.errors import GraphoptError

QUICK = {"rounds": 3, "sample_seconds": 0.005, "threads": 1}
SIZE = 16384
INPUTS = {"x": np.ones(SIZE, np.float32), "z": np.zeros(SIZE, np.float32)}


@pytest.fixture(scope="module")
def fast():
    return onnx_chain_model(chain=0, size=SIZE)


@pytest.fixture(scope="module")
def slow():
    return onnx_chain_model(chain=200, size=SIZE)


def test_guard_keeps_the_input_when_the_optimized_model_is_slower(fast, slow):
    decision = guard(fast, slow, inputs=INPUTS, **QUICK)
    assert isinstance(decision, GuardResult)
    keep, speedup = decision
    assert keep is False
    assert speedup < 1


def test_guard_keeps_the_optimized_model_when_it_is_faster(fast, slow):
    keep, speedup = guard(slow, fast, inputs=INPUTS, **QUICK)
    assert keep is True and speedup > 1


def test_guard_demands_more_than_min_speedup(fast, slow):
    keep, speedup = guard(slow, fast, inputs=INPUTS, min_speedup=1e9, **QUICK)
    assert keep is False and speedup > 1


def test_rerank_puts_the_fast_candidates_first_and_accepts_graphs(fast, slow):
    candidates = [slow, imported(fast), fast]  # a ModelProto, an IR graph, a ModelProto
    ranked = rerank(candidates, slow, **QUICK)  # random inputs for the reference's inputs
    assert [r.index for r in ranked][2] == 0
    assert sorted(r.index for r in ranked[:2]) == [1, 2]
    assert all(isinstance(r, Ranked) for r in ranked)
    index, latency_ms, speedup = ranked[0]  # unpacks as (index, latency, speedup)
    assert index in (1, 2) and latency_ms > 0 and speedup > 1
    assert ranked[0].speedup_q1 <= ranked[0].speedup_q3


def test_rerank_refuses_a_candidate_with_other_inputs(fast):
    import onnx

    other = onnx.ModelProto()
    other.CopyFrom(fast)
    other.graph.input[1].name = "w"
    for node in other.graph.node:
        node.input[:] = ["w" if name == "z" else name for name in node.input]
    with pytest.raises(GraphoptError, match="input 'w'"):
        rerank([other], fast, inputs=INPUTS, **QUICK)
