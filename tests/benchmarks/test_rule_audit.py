"""benchmarks/rule_audit.py on a tiny model: each rule applied alone everywhere (capped),
checked, priced, timed against the input with an A/A control, and reported.

Timing uses two short rounds: the tests check that figures exist and hang together, never
their values.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from benchmarks import rule_audit
from optimizer import onnx_io
from optimizer.passes.rewrite import default_rules

BATCHING = "gemm-batch-shared-weight-transb"


def shared_weight_graph(steps: int = 3):
    """``steps`` rows times one weight (Gemm with transB, no bias, as torch exports Linear),
    summed, then a Relu: the batching rule matches, and nothing else in the library does
    except what is asked for."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "w")
    nodes = [helper.make_node("Gemm", [f"x{t}", "w"], [f"y{t}"], transB=1) for t in range(steps)]
    nodes += [helper.make_node("Sum", [f"y{t}" for t in range(steps)], ["s"])]
    nodes += [helper.make_node("Relu", ["s"], ["out"])]
    inputs = [
        helper.make_tensor_value_info(f"x{t}", TensorProto.FLOAT, [1, 64]) for t in range(steps)
    ]
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 64])
    model = helper.make_model(
        helper.make_graph(nodes, "g", inputs, [out], [w]),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    graph, _ = onnx_io.import_model(model, None)
    return graph


def _rule(name: str):
    (rule,) = [r for r in default_rules().rules if r.name == name]
    return rule


def test_apply_everywhere_reaches_a_fixed_point_and_honours_the_cap():
    graph = shared_weight_graph(steps=4)
    rule = _rule(BATCHING)
    done, applied = rule_audit.apply_everywhere(graph, rule)
    assert applied == 3  # four rows: three pairwise batchings, then nothing matches
    assert [n.op for n in done.nodes()].count("Gemm") == 1
    assert rule_audit.apply_everywhere(done, rule)[1] == 0
    capped, applied = rule_audit.apply_everywhere(graph, rule, max_apply=1)
    assert applied == 1
    assert [n.op for n in capped.nodes()].count("Gemm") == 3


def test_audit_graph_checks_prices_and_times_each_matching_rule():
    graph = shared_weight_graph()
    rules = [_rule(BATCHING), _rule("slice-slice"), _rule("concat-concat")]
    result = rule_audit.audit_graph(graph, rules, rounds=2, sample_seconds=0.002)
    json.dumps(result)  # the report is JSON-ready
    (row,) = result["rows"]  # only the batching rule matches the input
    assert row["rule"] == BATCHING
    assert row["matches"] >= 2 and row["applied"] == 2
    assert row["outputs_match"] is True
    assert row["nodes"] < len(graph.nodes()) + 6
    assert isinstance(row["est_change"], float)
    assert row["speedup_q1"] <= row["speedup"] <= row["speedup_q3"]
    assert row["verdict"] in ("faster", "slower", "noise")
    assert row["mispriced"] in (True, False)
    control = result["control"]
    assert control is not None and control["speedup"] > 0
    assert row["control"] == control
    assert result["reference_latency_ms"] > 0


def test_verdicts_and_mispricing():
    control = {"speedup": 1.0, "speedup_q1": 0.97, "speedup_q3": 1.04}
    faster = {"speedup": 1.2, "speedup_q1": 1.1, "speedup_q3": 1.3}
    within = {"speedup": 1.03, "speedup_q1": 1.01, "speedup_q3": 1.05}
    slower = {"speedup": 0.8, "speedup_q1": 0.7, "speedup_q3": 0.9}
    assert rule_audit.verdict(faster, control) == "faster"
    assert rule_audit.verdict(within, control) == "noise"  # inside the A/A band
    assert rule_audit.verdict(slower, control) == "slower"
    assert rule_audit.verdict({}, control) == "-"
    assert rule_audit.mispriced({"verdict": "faster", "est_change": 0.01})
    assert not rule_audit.mispriced({"verdict": "faster", "est_change": -0.01})
    assert rule_audit.mispriced({"verdict": "slower", "est_change": -0.01})
    assert not rule_audit.mispriced({"verdict": "noise", "est_change": 0.5})


def test_markdown_lists_the_control_and_each_rule():
    row = {
        "rule": BATCHING, "matches": 4, "applied": 2, "nodes": 9, "est_change": -0.2,
        "outputs_match": True, "speedup": 1.5, "speedup_q1": 1.4, "speedup_q3": 1.6,
        "verdict": "faster", "mispriced": False,
    }  # fmt: skip
    control = {"speedup": 1.01, "speedup_q1": 0.99, "speedup_q3": 1.02, "latency_ms": 1.0}
    document = {
        "machine_line": "test machine", "loadavg_start": [0.5], "loadavg_end": [0.6],
        "seconds": 3.0, "command": "python -m benchmarks.rule_audit",
        "config": {"max_apply": 100, "rounds": 2, "sample_seconds": 0.002},
        "models": [
            {"name": "tiny", "nodes": 7, "reference_latency_ms": 1.0, "control": control,
             "rows": [row]},
            {"name": "broken", "error": "ValueError: no"},
        ],
    }  # fmt: skip
    text = rule_audit.markdown(document)
    assert "| tiny | A/A control (1.00 ms) |" in text
    assert f"`{BATCHING}` | 2 / 4 | 9 | -20.00% | 1.500x (1.40-1.60) | faster |" in text
    assert "| broken | error: ValueError: no |" in text
    assert f"Measured faster: `{BATCHING}` on tiny (1.50x, est. -20.0%)" in text
