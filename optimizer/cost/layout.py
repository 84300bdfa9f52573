"""Which convolutions onnxruntime's CPU layout pass leaves out of its blocked (NCHWc) kernels.

At ORT_ENABLE_ALL on the CPU, onnxruntime rewrites chains of convolutions and pools into its
NCHWc layout (channels in blocks, one vectorized kernel per block). A depthwise convolution
whose channel count is not a multiple of 4 stays behind: it runs the plain NCHW kernel
(im2col and one small product per group) with layout reorders around it. On NASNet-A's
11- and 22-channel cells that kernel spent about 19% of the model's time at roughly a tenth of
the blocked kernel's FLOP rate (measured on the 2-core development machine with onnxruntime
1.32: a probe of every channel count from 2 to 49 found exactly the multiples of 4 blocked).

A FLOP-counting model cannot see that, so :class:`optimizer.cost.fusion.OrtFusionCost`
multiplies such a node's price by :data:`UNBLOCKED_DEPTHWISE_FACTOR` when it prices for the
CPU; the channel-padding rules (``rules/conv.rules``) then pay off where they should. The
measured cost model times the real kernel and needs no correction.
"""

from __future__ import annotations

from optimizer.ir import Node, TensorType

__all__ = ["BLOCKED_CHANNEL_MULTIPLE", "UNBLOCKED_DEPTHWISE_FACTOR", "unblocked_depthwise"]

#: A depthwise convolution runs in the blocked kernels when its channels are a multiple of this.
BLOCKED_CHANNEL_MULTIPLE = 4
#: Price multiplier of a depthwise convolution left in the NCHW kernel: the same ratio as
#: between elementwise and dense FLOPs (optimizer.cost.analytic.OTHER_FLOP_WEIGHT), which is
#: about what the development machine measured for this kernel.
UNBLOCKED_DEPTHWISE_FACTOR = 8.0


def unblocked_depthwise(node: Node) -> bool:
    """Whether ``node`` is a 2-D depthwise Conv that onnxruntime's CPU layout pass leaves in
    the plain NCHW kernel (its channel count is not a multiple of 4)."""
    if node.op != "Conv" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2:
        return False
    weight = node.inputs[1]
    if weight is None or not isinstance(weight.type, TensorType) or weight.type.shape is None:
        return False
    shape = weight.type.shape
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape):
        return False
    group = node.attr("group", 1)
    if not isinstance(group, int):
        return False
    return (
        group > 1 and shape[0] == group and shape[1] == 1 and group % BLOCKED_CHANNEL_MULTIPLE != 0
    )
