"""The lowering pass (optimizer/passes/lowering.py) and its rule ``layernorm-of-sum``
(rules/lowering.rules).

onnxruntime's CPU provider fuses an Add of two same-shape tensors into the LayerNormalization
reading it (SkipLayerNormalization) when that is the Add's only reader; its 1.32 kernel is
several times slower than the two ops it replaces. Spelling the Add as a two-input Sum computes
the same values and keeps onnxruntime's LayerNormalization kernel. The pass lowers BERT's
post-LN residual, leaves a pre-LN residual (whose Add has other readers, so onnxruntime does not
fuse it and a Sum would duplicate the addition) and an Add of a constant alone, and the search
never applies the rule itself. tests/verify/test_library.py proves the rule.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from rules_onnx_helpers import checked_model

import optimizer
from optimizer import onnx_io, runtime
from optimizer.passes.lowering import lower_for_runtime, lowering_rules
from optimizer.passes.rewrite import default_rules

RNG = np.random.default_rng(11)
D = 32


def residual_block(residual: str = "x", pre_ln: bool = False) -> onnx.ModelProto:
    """y = LayerNorm(x @ w + residual), seq 16, width 32: BERT's post-LN residual when
    ``residual`` is "x", an Add of a same-shape constant when "c". ``pre_ln`` also returns
    the sum itself (the residual stream of a pre-LN block reads it: two readers)."""
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"]),
        helper.make_node("Add", ["xw", residual], ["s"]),
        helper.make_node("LayerNormalization", ["s", "g", "b"], ["y"], axis=-1, epsilon=1e-5),
    ]
    inits = [
        numpy_helper.from_array((RNG.standard_normal((D, D)) * 0.2).astype(np.float32), "w"),
        numpy_helper.from_array(RNG.standard_normal(D).astype(np.float32), "g"),
        numpy_helper.from_array(RNG.standard_normal(D).astype(np.float32), "b"),
        numpy_helper.from_array(RNG.standard_normal((1, 16, D)).astype(np.float32), "c"),
    ][: 4 if residual == "c" else 3]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, D])]
    if pre_ln:
        outputs.append(helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 16, D]))
    return checked_model(
        nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, D])],
        outputs, inits,
    )  # fmt: skip


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def test_cpu_optimize_spells_the_post_ln_residual_add_as_a_sum():
    model = residual_block()
    out = optimizer.optimize(model, guard=False)
    assert "Sum" in _ops(out) and "Add" not in _ops(out), _ops(out)
    report = runtime.compare_models(model, out, num_samples=2, rtol=0, atol=0)
    assert report.ok, report.summary()  # the same additions in the same order


def test_an_add_with_other_readers_is_left_alone():
    graph, _ = onnx_io.import_model(residual_block(pre_ln=True), None)
    lowered, applied = lower_for_runtime(graph, "cpu")
    assert applied == [] and lowered is graph


def test_an_add_of_a_constant_is_left_alone():
    out = optimizer.optimize(residual_block("c"), guard=False)
    assert "Sum" not in _ops(out)


def test_the_rule_is_for_the_cpu_and_not_searched():
    assert [r.name for r in lowering_rules("cpu").rules] == ["layernorm-of-sum"]
    assert lowering_rules("cuda").rules == []
    assert "layernorm-of-sum" not in {r.name for r in default_rules().rules}
    graph, _ = onnx_io.import_model(residual_block(), None)
    assert lower_for_runtime(graph, "cuda") == (graph, [])
