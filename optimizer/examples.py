"""A built-in example model, built from code, so graphopt can be tried without any file.

It is a small image classifier written the way exporters often write
models: an Identity and a Dropout left in, a weight computed from two
constants, a computed Reshape target, a subexpression computed twice and a
branch whose result nobody reads.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Name under which ``graphopt example`` writes the model.
EXAMPLE_NAME = "example-cnn"


def example_model(seed: int = 0) -> onnx.ModelProto:
    """The example classifier: input ``image`` float[N,3,32,32], output ``logits`` float[N,10]."""
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)

    initializers = [
        weight("conv1_w", 16, 3, 3, 3),
        weight("conv1_b", 16),
        weight("bn_scale", 16),
        weight("bn_bias", 16),
        weight("bn_mean", 16),
        numpy_helper.from_array(np.abs(rng.standard_normal(16)).astype(np.float32) + 0.5, "bn_var"),
        weight("conv2_w_raw", 32, 16, 3, 3),
        numpy_helper.from_array(np.full((32, 1, 1, 1), 0.5, np.float32), "conv2_w_scale"),
        weight("fc_w", 32 * 8 * 8, 10),
        weight("fc_b", 10),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "conv1_w", "conv1_b"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn1"]
        ),
        helper.make_node("Relu", ["bn1"], ["r1"]),
        helper.make_node("Identity", ["r1"], ["r1_copy"]),
        helper.make_node("MaxPool", ["r1_copy"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Dropout", ["p1"], ["d1"]),
        # The weight is computed from two constants at every run.
        helper.make_node("Mul", ["conv2_w_raw", "conv2_w_scale"], ["conv2_w"]),
        helper.make_node("Conv", ["d1", "conv2_w"], ["c2"], pads=[1, 1, 1, 1]),
        # The same activation, computed twice and added.
        helper.make_node("Relu", ["c2"], ["r2a"]),
        helper.make_node("Relu", ["c2"], ["r2b"]),
        helper.make_node("Add", ["r2a", "r2b"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
        # A Reshape target computed from the batch size, as torch.onnx writes flatten().
        helper.make_node("Shape", ["p2"], ["p2_shape"]),
        helper.make_node("Gather", ["p2_shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "zero_axes"], ["batch_1d"]),
        helper.make_node("Concat", ["batch_1d", "minus_one"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["p2", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "fc_w"], ["mm"]),
        helper.make_node("Add", ["mm", "fc_b"], ["logits"]),
        # A branch whose result is never used.
        helper.make_node("Sigmoid", ["p2"], ["unused"]),
    ]
    initializers.append(numpy_helper.from_array(np.array([0], np.int64), "zero_axes"))
    graph = helper.make_graph(
        nodes,
        "example_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializers,
        doc_string="graphopt's built-in example model",
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="graphopt-example"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
