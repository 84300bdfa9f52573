"""Calibration of the analytic cost model: a short measured sweep, a non-negative fit.

A node's time is modelled as ``seconds_per_flop[class] * flops + seconds_per_byte * bytes +
seconds_per_kernel``, with the op classes of :data:`optimizer.cost.analytic.OP_CLASSES` (dense
convolutions and matrix products run far more FLOPs per second than elementwise ops) and bytes
counting every input read and output written (:func:`optimizer.cost.analytic.node_features`).

:func:`sweep` times a few dozen representative nodes alone on the device (MatMul and Conv of
several sizes, elementwise ops, Transpose, Softmax, a few tiny ops that pin the per-kernel
overhead) with :mod:`optimizer.cost.isolate`, in about a second. :func:`fit` solves the
non-negative least-squares problem in relative error (each row divided by its measured time,
so a 10 us op weighs as much as a 10 ms one). :func:`calibration_for` returns the stored
calibration of this machine (key: CPU or GPU model, provider, thread count, onnxruntime
version, see :meth:`DeviceSpec.key`) or sweeps, fits and stores one
(``cost-calibration.json`` in the cache folder).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import nnls

from optimizer.cost import cache as _cache
from optimizer.cost import isolate
from optimizer.cost.analytic import node_features, op_class
from optimizer.cost.device import DeviceSpec
from optimizer.errors import GraphoptError
from optimizer.ir import DType, Node, TensorData, TensorType, constant, graph_input

__all__ = [
    "CLASSES",
    "Calibration",
    "Sample",
    "calibration_for",
    "fit",
    "sweep",
    "sweep_nodes",
]

#: The FLOP classes fitted, in column order.
CLASSES = ("conv", "matmul", "other")
#: Timing of one sweep op: the best of several samples of a few milliseconds.
_SAMPLE_SECONDS = 0.002
_SAMPLES = 7


@dataclass(frozen=True)
class Sample:
    """One measured op of the sweep: its features and its time inside a model (seconds)."""

    description: str
    op_class: str
    flops: float
    bytes_moved: float
    seconds: float

    def row(self) -> list[float]:
        """Its row of the design matrix: FLOPs per class, bytes, 1."""
        return [self.flops if self.op_class == c else 0.0 for c in CLASSES] + [
            self.bytes_moved,
            1.0,
        ]


@dataclass(frozen=True)
class Calibration:
    """Fitted per-device weights (seconds) and how well they fit.

    ``median_rel_error`` is the median over the sweep of ``|predicted - measured| / measured``.
    """

    seconds_per_flop: tuple[tuple[str, float], ...]
    seconds_per_byte: float
    seconds_per_kernel: float
    device: dict[str, Any] = field(default_factory=dict)
    median_rel_error: float = math.nan
    samples: tuple[Sample, ...] = ()
    created: float = 0.0

    def predict(self, sample: Sample) -> float:
        """The fitted time of ``sample``."""
        per_flop = dict(self.seconds_per_flop)
        weights = [per_flop.get(c, 0.0) for c in CLASSES] + [
            self.seconds_per_byte,
            self.seconds_per_kernel,
        ]
        return float(np.dot(sample.row(), weights))

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds_per_flop": dict(self.seconds_per_flop),
            "seconds_per_byte": self.seconds_per_byte,
            "seconds_per_kernel": self.seconds_per_kernel,
            "device": self.device,
            "median_rel_error": self.median_rel_error,
            "samples": [s.__dict__ for s in self.samples],
            "created": self.created,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration:
        return cls(
            seconds_per_flop=tuple(sorted((str(k), float(v)) for k, v in
                                          data["seconds_per_flop"].items())),
            seconds_per_byte=float(data["seconds_per_byte"]),
            seconds_per_kernel=float(data["seconds_per_kernel"]),
            device=dict(data.get("device", {})),
            median_rel_error=float(data.get("median_rel_error", math.nan)),
            samples=tuple(Sample(**s) for s in data.get("samples", ())),
            created=float(data.get("created", 0.0)),
        )  # fmt: skip


def fit(samples: Sequence[Sample]) -> Calibration:
    """Non-negative least squares in relative error over ``samples`` (see the module
    docstring). Raises :class:`GraphoptError` without usable samples."""
    good = [s for s in samples if s.seconds > 0 and math.isfinite(s.seconds)]
    if not good:
        raise GraphoptError("calibration needs at least one timed sample")
    a = np.array([s.row() for s in good], dtype=float)
    t = np.array([s.seconds for s in good], dtype=float)
    a_rel = a / t[:, None]  # relative error: every row's target becomes 1
    scale = np.abs(a_rel).max(axis=0)
    scale[scale == 0] = 1.0  # a class with no sample gets weight 0
    solution, _ = nnls(a_rel / scale, np.ones(len(good)), maxiter=50 * a.shape[1])
    weights = solution / scale
    per_flop = tuple((c, float(w)) for c, w in zip(CLASSES, weights[: len(CLASSES)]))
    calibration = Calibration(
        seconds_per_flop=per_flop,
        seconds_per_byte=float(weights[len(CLASSES)]),
        seconds_per_kernel=float(weights[len(CLASSES) + 1]),
        samples=tuple(good),
    )
    errors = [abs(calibration.predict(s) - s.seconds) / s.seconds for s in good]
    return Calibration(
        calibration.seconds_per_flop,
        calibration.seconds_per_byte,
        calibration.seconds_per_kernel,
        samples=tuple(good),
        median_rel_error=float(statistics.median(errors)),
    )


# ---------------------------------------------------------------------- the sweep


def _f32(shape: Sequence[int]) -> TensorType:
    return TensorType(DType.FLOAT, tuple(shape))


def _weight(rng: np.random.Generator, shape: Sequence[int]):
    return constant(TensorData.from_array(rng.standard_normal(shape).astype(np.float32)))


def sweep_nodes(seed: int = 0) -> list[Node]:
    """The representative nodes the sweep times (float32, batch 1, constant weights)."""
    rng = np.random.default_rng(seed)
    nodes: list[Node] = []

    def x(name: str, shape: Sequence[int]):
        return graph_input(name, _f32(shape))

    for m, k, n in ((1, 256, 256), (1, 1024, 1024), (64, 256, 256), (128, 768, 768),
                    (256, 512, 512), (16, 128, 64)):  # fmt: skip
        nodes.append(
            Node.make("MatMul", [x("a", (m, k)), _weight(rng, (k, n))], output_types=[_f32((m, n))])
        )
    for c, hw, o, ks in ((16, 56, 16, 3), (64, 56, 64, 3), (64, 56, 256, 1), (128, 28, 128, 3),
                         (256, 14, 256, 3), (3, 64, 32, 3)):  # fmt: skip
        pad = ks // 2
        nodes.append(
            Node.make(
                "Conv",
                [x("x", (1, c, hw, hw)), _weight(rng, (o, c, ks, ks)), _weight(rng, (o,))],
                {"kernel_shape": [ks, ks], "pads": [pad] * 4},
                output_types=[_f32((1, o, hw, hw))],
            )
        )
    for size in (1, 1000, 100_000, 1_000_000):
        a, b = x("a", (size,)), x("b", (size,))
        nodes.append(Node.make("Add", [a, b], output_types=[_f32((size,))]))
    for size in (16, 10_000, 1_000_000):
        nodes.append(Node.make("Relu", [x("a", (size,))], output_types=[_f32((size,))]))
    nodes.append(
        Node.make(
            "Mul",
            [x("a", (1, 64, 56, 56)), _weight(rng, (1, 64, 1, 1))],
            output_types=[_f32((1, 64, 56, 56))],
        )
    )
    nodes.append(
        Node.make(
            "Transpose", [x("a", (64, 64, 64))], {"perm": [2, 0, 1]},
            output_types=[_f32((64, 64, 64))],
        )
    )  # fmt: skip
    nodes.append(
        Node.make(
            "Transpose", [x("a", (1, 56, 56, 64))], {"perm": [0, 3, 1, 2]},
            output_types=[_f32((1, 64, 56, 56))],
        )
    )  # fmt: skip
    nodes.append(
        Node.make("Softmax", [x("a", (12, 128, 128))], {"axis": -1},
                  output_types=[_f32((12, 128, 128))])
    )  # fmt: skip
    return nodes


def sweep(
    device: DeviceSpec,
    *,
    nodes: Sequence[Node] | None = None,
    sample_seconds: float = _SAMPLE_SECONDS,
    samples: int = _SAMPLES,
    progress: Callable[[int, int], None] | None = None,
) -> list[Sample]:
    """Time ``nodes`` (default :func:`sweep_nodes`) alone on ``device``."""
    nodes = list(nodes) if nodes is not None else sweep_nodes()
    measured = []
    for done, node in enumerate(nodes, 1):
        sig = isolate.signature(node, dict(isolate.DEFAULT_OPSETS))
        built = isolate.build(node, dict(isolate.DEFAULT_OPSETS))
        seconds, _ = isolate.time_model(
            built, device, sample_seconds=sample_seconds, samples=samples
        )
        flops, read, written = node_features(node)
        measured.append(Sample(sig.description, op_class(node.op), flops, read + written, seconds))
        if progress is not None:
            progress(done, len(nodes))
    return measured


def _store_key(device: DeviceSpec) -> str:
    return json.dumps(device.key(), sort_keys=True)


def calibration_for(
    device: DeviceSpec,
    *,
    cache_dir: str | os.PathLike | None = None,
    recalibrate: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Calibration:
    """The stored calibration of ``device`` on this machine, or a fresh one (swept, fitted
    and stored in ``cost-calibration.json`` of the cache folder)."""
    store = _cache.JsonStore(_cache.cache_dir(cache_dir) / _cache.CALIBRATION_FILE)
    key = _store_key(device)
    entry = store.get(key)
    if entry is not None and not recalibrate:
        try:
            return Calibration.from_json(entry)
        except (KeyError, TypeError, ValueError):
            pass  # a damaged entry: calibrate again
    fitted = fit(sweep(device, progress=progress))
    calibration = Calibration(
        fitted.seconds_per_flop,
        fitted.seconds_per_byte,
        fitted.seconds_per_kernel,
        device=device.key(),
        median_rel_error=fitted.median_rel_error,
        samples=fitted.samples,
        created=time.time(),
    )
    store.put(key, calibration.to_json())
    store.save()
    return calibration

