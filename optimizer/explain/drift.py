"""Numeric drift of rewritten graphs, and the bisection that names the rewrite behind it.

Rules are proved over the reals (docs/verification.md), so a rewritten model differs from
its input only by floating-point rounding: reassociating ``(x + 4096) - 4096`` into
``x + (4096 - 4096)`` is exact in real arithmetic and changes float32 results by up to half a
unit in the last place of 4096. :class:`DriftProbe` measures that difference: it runs a graph
on onnxruntime (optimizations off, as the numeric check does) on the check's inputs (the same
seeded random inputs, the same input shapes) and returns the largest absolute difference from
the reference graph's outputs, over every output.

:func:`bisect` finds, along a chain of graphs ``g_0 .. g_n`` (the reference first), the link
where the drift crosses half of the final drift ``d(g_n)``: it keeps ``d(g_lo) < t <= d(g_hi)``
with ``t = d(g_n) / 2``, which holds at ``lo = 0`` (``d(g_0) = 0``) and ``hi = n``, and halves
``hi - lo`` until the two are adjacent, so the link ``hi`` is a step at which the drift
really crossed ``t``, found with about ``log2(n)`` runs. When one rewrite causes most of the
drift (drift that adds up), that is its link. Drift need not be monotone along the chain
(rounding errors can cancel), so the answer is *a* crossing, not necessarily the first; the
report shows the drift measured at every graph it ran.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from optimizer import onnx_io, runtime
from optimizer.ir import Graph

__all__ = ["Bisection", "DriftProbe", "bisect", "max_abs_difference"]


def max_abs_difference(reference: Mapping[str, object], candidate: Mapping[str, object]) -> float:
    """The largest absolute difference over the outputs both have (numbers only; a NaN or
    infinity where the other side has a different value counts as infinite)."""
    worst = 0.0
    for name, ref in reference.items():
        if name not in candidate:
            continue
        r, c = np.asarray(ref), np.asarray(candidate[name])
        if r.shape != c.shape:
            return math.inf
        if r.size == 0 or r.dtype.kind not in "fciub" or c.dtype.kind not in "fciub":
            continue
        wide = np.complex128 if "c" in (r.dtype.kind, c.dtype.kind) else np.float64
        r, c = r.astype(wide), c.astype(wide)
        with np.errstate(all="ignore"):
            same = (r == c) | (np.isnan(r) & np.isnan(c))
            err = np.where(same, 0.0, np.abs(c - r))
        err = np.where(np.isnan(err), np.inf, err)
        worst = max(worst, float(err.max()))
    return worst


class DriftProbe:
    """Runs graphs on the numeric check's inputs and measures their drift from ``reference``.

    ``input_shapes``, ``seed`` and ``device`` are the check's (``graphopt optimize``'s
    ``--input-shape``; seed 0). Raises :class:`~optimizer.errors.CheckUnavailableError` when
    onnxruntime cannot load or run the reference.
    """

    def __init__(
        self,
        reference: Graph,
        *,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self.device = device
        session = self._session(reference, "the reference graph")
        specs = runtime.input_specs(session)
        self.inputs = runtime.random_inputs(specs, input_shapes=input_shapes, seed=seed)
        self.expected = runtime.run(session, self.inputs, label="the reference graph")
        self.runs = 1

    def _session(self, graph: Graph, label: str):
        return runtime.make_session(
            onnx_io.to_proto(graph), device=self.device, options=runtime.CHECK_OPTIONS,
            label=label,
        )  # fmt: skip

    def outputs(self, graph: Graph, label: str = "a rewritten graph") -> dict[str, object]:
        """``graph``'s outputs on the probe's inputs (the inputs it declares)."""
        session = self._session(graph, label)
        names = {i.name for i in session.get_inputs()}
        self.runs += 1
        return runtime.run(
            session, {k: v for k, v in self.inputs.items() if k in names}, label=label
        )

    def drift(self, graph: Graph, label: str = "a rewritten graph") -> float:
        """The largest absolute output difference of ``graph`` from the reference."""
        return max_abs_difference(self.expected, self.outputs(graph, label))


@dataclass
class Bisection:
    """A drift bisection along ``n + 1`` graphs: ``measured`` maps each graph index that ran
    to its drift; ``link`` is the index ``hi`` of the graph where the drift crossed
    ``threshold`` (None when the final drift is 0); ``before``/``after`` its neighbours' drift."""

    total: float
    threshold: float
    link: int | None
    measured: dict[int, float] = field(default_factory=dict)

    @property
    def before(self) -> float:
        return self.measured.get(self.link - 1, 0.0) if self.link is not None else 0.0

    @property
    def after(self) -> float:
        return self.measured.get(self.link, 0.0) if self.link is not None else 0.0

    @property
    def share(self) -> float:
        """The blamed link's increase of the drift as a share of the final drift."""
        if self.link is None or not self.total or not math.isfinite(self.total):
            return 0.0
        return (self.after - self.before) / self.total


def bisect(
    n: int,
    drift: Callable[[int], float],
    *,
    known: Mapping[int, float] | None = None,
    threshold: float | None = None,
) -> Bisection:
    """Bisect the drift along graphs ``0 .. n`` (``drift(i)`` runs graph ``i``). ``threshold``
    defaults to half of ``drift(n)``; ``known`` drift values (graph 0's, at least, when it is
    not the reference itself) are not measured again. ``link`` is None when the drift does
    not cross the threshold between graph 0 and graph ``n``."""
    measured = {0: 0.0, **(known or {})}

    def d(i: int) -> float:
        if i not in measured:
            measured[i] = drift(i)
        return measured[i]

    total = d(n) if n > 0 else 0.0
    if threshold is None:
        threshold = total / 2 if math.isfinite(total) else math.inf
    if not (total > 0.0 and d(0) < threshold <= total):
        return Bisection(total, threshold, None, measured)
    lo, hi = 0, n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if d(mid) >= threshold:
            hi = mid
        else:
            lo = mid
    return Bisection(total, threshold, hi, measured)
