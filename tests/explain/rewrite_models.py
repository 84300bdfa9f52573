"""A small model on which the rule library applies exact and lossy rewrites.

``y = relu(relu(x)) + ((x + BIG) - BIG) + transpose(transpose(x))``, float32 ``x[4, 8]``:

- ``relu-relu`` and the transpose rules are exact in floating point;
- ``sub-const-reassoc`` turns ``(x + BIG) - BIG`` into ``x + (BIG - BIG)``, exact over the
  reals (the rule is proved) but not in float32: ``x + 4096`` rounds ``x`` to a multiple of
  2**-11, so the original loses up to 2**-12 ~ 2.4e-4 that the rewritten graph keeps. That
  rewrite is the one a drift bisection must name.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BIG = 4096.0
#: The rule behind the drift.
LOSSY_RULE = "sub-const-reassoc"
#: The largest drift the lossy rewrite can cause: half a unit in the last place of BIG.
MAX_DRIFT = float(np.spacing(np.float32(BIG))) / 2


def lossy_model(big: float = BIG) -> onnx.ModelProto:
    """The model of the module docstring."""

    def const(name: str, value: float) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(value, dtype=np.float32), name)

    nodes = [
        helper.make_node("Relu", ["x"], ["r1"], name="relu_a"),
        helper.make_node("Relu", ["r1"], ["r2"], name="relu_b"),
        helper.make_node("Add", ["x", "big"], ["s1"], name="add_big"),
        helper.make_node("Sub", ["s1", "big_again"], ["s2"], name="sub_big"),
        helper.make_node("Transpose", ["x"], ["t1"], perm=[1, 0], name="tr_a"),
        helper.make_node("Transpose", ["t1"], ["t2"], perm=[1, 0], name="tr_b"),
        helper.make_node("Add", ["r2", "s2"], ["u"], name="sum1"),
        helper.make_node("Add", ["u", "t2"], ["y"], name="sum2"),
    ]
    graph = helper.make_graph(
        nodes,
        "lossy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8])],
        [const("big", big), const("big_again", big)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return model
