"""The analytic cost model: FLOPs, bytes moved and a per-kernel overhead per node.

Per node: a FLOP weight (per op class) times its FLOPs (or output elements when unknown), plus
``launch_overhead``, plus ``bytes_weight`` times the bytes it writes and ``read_weight`` times
the bytes it reads; nodes computable from constants alone are free, since constant folding
removes them. Symbolic dimensions count as 1, as in :func:`optimizer.info.node_flops`. The sum
over nodes lets a search price a candidate from the nodes it adds and removes, without
rebuilding the graph.

Uncalibrated (``AnalyticCost()``), the weights are fixed and the unit is the FLOP-equivalent
(one FLOP of a dense kernel): a kernel launch costs :data:`LAUNCH_OVERHEAD`, a byte read or
written one, and a FLOP of any other op (elementwise, pooling, normalization)
:data:`OTHER_FLOP_WEIGHT`, the ratio a calibration on the development machine measured (see
docs/cost.md). Bytes read count weights too: at batch 1 a matrix-vector product is bound by
reading its weight, so two products reading one weight cost more than one product of both
inputs. :meth:`AnalyticCost.calibrated` fits the weights to a short measured sweep on a device
(:mod:`optimizer.cost.calibrate`), stored per machine, and the unit becomes the second.
"""

from __future__ import annotations

import os
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from optimizer.cost.additive import NodeAdditive, foldable
from optimizer.info import node_flops
from optimizer.ir import Node, TensorType, Value
from optimizer.ir.types import num_elements

if TYPE_CHECKING:
    from optimizer.cost.calibrate import Calibration

__all__ = [
    "LAUNCH_OVERHEAD",
    "OP_CLASSES",
    "OTHER_FLOP_WEIGHT",
    "AnalyticCost",
    "foldable",
    "node_features",
    "op_class",
    "value_bytes",
]

#: FLOP-equivalents charged per kernel launch.
LAUNCH_OVERHEAD = 10_000
#: Dense-FLOP equivalents of one FLOP of an op outside the dense classes (elementwise,
#: pooling, normalization ...) in the uncalibrated model: the calibration of the 2-core
#: development machine (onnxruntime 1.32, CPU) fitted 35 ps per such FLOP against 4.3 (conv)
#: and 5.2 (matmul); 8 rounds the ratio. Without it, a depthwise convolution (2 FLOPs per tap)
#: looked twice as costly as the average pooling it replaces (1 per tap), which onnxruntime
#: runs up to 25 times slower per FLOP.
OTHER_FLOP_WEIGHT = 8.0

#: Ops whose FLOPs run at their own rate once calibrated (dense kernels are far more
#: efficient per FLOP than elementwise ones); every other op is "other".
OP_CLASSES: dict[str, str] = {
    "Conv": "conv", "ConvTranspose": "conv", "ConvInteger": "conv", "QLinearConv": "conv",
    "MatMul": "matmul", "Gemm": "matmul", "MatMulInteger": "matmul", "QLinearMatMul": "matmul",
    "FusedMatMul": "matmul", "Attention": "matmul", "MultiHeadAttention": "matmul",
}  # fmt: skip


def op_class(op: str) -> str:
    """The calibration class of ``op``: "conv", "matmul" or "other"."""
    return OP_CLASSES.get(op, "other")


def _elements(value: Value) -> int:
    t = value.type
    if not isinstance(t, TensorType) or t.shape is None:
        return 1
    count = num_elements(tuple(d if isinstance(d, int) else 1 for d in t.shape))
    return 1 if count is None else count


def value_bytes(value: Value | None) -> float:
    """Size of ``value`` in bytes (symbolic dimensions count as 1; 0 for a non-tensor)."""
    if value is None or not isinstance(value.type, TensorType):
        return 0.0
    return _elements(value) * (value.type.dtype.itemsize or 8)


def node_features(node: Node) -> tuple[float, float, float]:
    """``(flops, bytes_read, bytes_written)`` of one node.

    FLOPs are :func:`optimizer.info.node_flops`, or the output elements when the shapes are
    unknown; bytes count every tensor input (weights included; of a strided window's input,
    the pixels it reads: :func:`touched_fraction`) and every output.
    """
    try:
        flops = node_flops(node)
    except Exception:  # noqa: BLE001 - odd shapes: fall back to counting elements
        flops = None
    if flops is None:
        flops = sum(_elements(v) for v in node.outputs)
    read = sum(value_bytes(v) for v in node.inputs)
    if node.op in WINDOWED_OPS and node.inputs and node.inputs[0] is not None:
        read -= value_bytes(node.inputs[0]) * (1.0 - touched_fraction(node))
    written = sum(value_bytes(v) for v in node.outputs)
    return float(flops), read, written


#: Ops sliding a window over their first input's spatial axes.
WINDOWED_OPS = frozenset({"Conv", "AveragePool", "MaxPool", "LpPool"})


def touched_fraction(node: Node) -> float:
    """Share of a windowed op's input pixels its windows read: below 1 where the stride
    skips pixels (a 1x1 kernel with stride 2 reads a quarter of them), 1 when the shapes are
    not static. Counting the whole input would price ``conv1x1(x, stride 2)`` above
    ``conv1x1(subsample(x))``, though both kernels read the same pixels."""
    x, y = node.inputs[0].type, node.outputs[0].type
    if not (isinstance(x, TensorType) and isinstance(y, TensorType)):
        return 1.0
    if x.shape is None or y.shape is None or len(x.shape) != len(y.shape) or len(x.shape) < 3:
        return 1.0
    n_sp = len(x.shape) - 2
    kernel = node.attr("kernel_shape")
    if kernel is None and node.op == "Conv" and len(node.inputs) > 1 and node.inputs[1] is not None:
        w = node.inputs[1].type
        kernel = w.shape[2:] if isinstance(w, TensorType) and w.shape is not None else None
    strides = node.attr("strides") or [1] * n_sp
    dilations = node.attr("dilations") or [1] * n_sp
    if kernel is None or len(kernel) != n_sp:
        return 1.0
    fraction = 1.0
    for i in range(n_sp):
        size_in, size_out = x.shape[2 + i], y.shape[2 + i]
        if not all(isinstance(d, int) for d in (size_in, size_out, kernel[i])):
            return 1.0
        extent = (kernel[i] - 1) * dilations[i] + 1
        if size_in > 0:
            fraction *= min(1.0, size_out * min(extent, strides[i]) / size_in)
    return fraction


@dataclass(frozen=True)
class AnalyticCost(NodeAdditive):
    """Estimated cost of a graph from FLOPs, bytes and kernel launches (see the module
    docstring).

    ``flop_weight`` prices a FLOP of the dense classes ("conv", "matmul" in
    :data:`OP_CLASSES`) and ``other_flop_factor`` times it a FLOP of any other op;
    ``class_flop_weights`` (a calibration's fit) gives absolute FLOP weights per class,
    overriding both. ``read_weight`` prices a byte read (None: like a byte written,
    ``bytes_weight``). ``units`` says what the numbers measure. Symbolic dimensions count as
    1, as in :func:`optimizer.info.node_flops`.
    """

    launch_overhead: float = LAUNCH_OVERHEAD
    bytes_weight: float = 1.0
    flop_weight: float = 1.0
    read_weight: float | None = None
    class_flop_weights: tuple[tuple[str, float], ...] = ()
    other_flop_factor: float = OTHER_FLOP_WEIGHT
    units: str = "flop-equivalents"
    _memo: weakref.WeakKeyDictionary = field(
        default_factory=weakref.WeakKeyDictionary, compare=False, repr=False
    )

    def node_cost(self, node: Node) -> float:
        """Cost of running ``node`` (not free); nodes are immutable, so it is memoized."""
        cost = self._memo.get(node)
        if cost is None:
            cost = self._memo[node] = self._node_cost(node)
        return cost

    def _node_cost(self, node: Node) -> float:
        if node.is_source:
            return 0.0
        flops, read, written = node_features(node)
        klass = op_class(node.op)
        weight = self.flop_weight * (self.other_flop_factor if klass == "other" else 1.0)
        if self.class_flop_weights:
            weight = dict(self.class_flop_weights).get(klass, weight)
        read_weight = self.bytes_weight if self.read_weight is None else self.read_weight
        return (
            weight * flops + self.launch_overhead + self.bytes_weight * written + read_weight * read
        )

    @classmethod
    def from_calibration(cls, calibration: Calibration) -> AnalyticCost:
        """The model whose weights a device calibration fitted (unit: seconds)."""
        per_flop = dict(calibration.seconds_per_flop)
        return cls(
            launch_overhead=calibration.seconds_per_kernel,
            bytes_weight=calibration.seconds_per_byte,
            read_weight=calibration.seconds_per_byte,
            flop_weight=per_flop.get("other", 0.0),
            class_flop_weights=tuple(sorted(per_flop.items())),
            other_flop_factor=1.0,  # classes the fit lacks cost its "other" rate
            units="seconds",
        )

    @classmethod
    def calibrated(
        cls,
        device: str = "cpu",
        *,
        threads: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        recalibrate: bool = False,
    ) -> AnalyticCost:
        """The model calibrated for ``device`` (seconds): the stored calibration of this
        machine, provider, thread count and onnxruntime version, or a fresh sweep of a few
        seconds that is then stored (see :mod:`optimizer.cost.calibrate`)."""
        from optimizer.cost.calibrate import calibration_for  # it imports this module
        from optimizer.cost.device import DeviceSpec

        spec = DeviceSpec(device, threads)
        return cls.from_calibration(
            calibration_for(spec, cache_dir=cache_dir, recalibrate=recalibrate)
        )
