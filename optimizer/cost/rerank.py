"""End-to-end re-ranking of candidate graphs, and the final guard against a slower model.

Per-node sums miss what onnxruntime does to a whole model (it fuses Conv+Add+Relu, MatMul+Add,
LayerNorm, attention ...), so the last word on which candidate is fastest belongs to the
runtime itself: :func:`rerank` times the best few candidates as whole models on onnxruntime at
ORT_ENABLE_ALL, interleaved with the reference in one process (:mod:`optimizer.timing`:
samples of at least ``sample_seconds``, rotating order, fixed intra-op threads, spinning off),
and ranks them by the median of per-round ratios ``t(reference) / t(candidate)``.
:func:`guard` applies it to one optimized model: keep it only when it is measured faster
than the input.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import onnx

from optimizer import onnx_io, timing
from optimizer.cost.device import DeviceSpec
from optimizer.errors import GraphoptError
from optimizer.ir import Graph
from optimizer.runtime import input_specs, make_session, random_inputs

__all__ = ["GuardResult", "Ranked", "guard", "rerank"]

Candidate = Graph | onnx.ModelProto | str | os.PathLike
REFERENCE = "reference"


@dataclass(frozen=True)
class Ranked:
    """One re-ranked candidate: its index in the list given to :func:`rerank`, its median
    latency per call (ms), its speedup over the reference (median of per-round ratios) and
    the quartiles of those ratios. Unpacks as ``(index, latency_ms, speedup)``."""

    index: int
    latency_ms: float
    speedup: float
    speedup_q1: float
    speedup_q3: float

    def __iter__(self) -> Iterator[Any]:
        return iter((self.index, self.latency_ms, self.speedup))


class GuardResult(NamedTuple):
    """The guard's decision: keep the optimized model, and its measured speedup."""

    keep_optimized: bool
    speedup: float


def _model(candidate: Candidate) -> onnx.ModelProto | str | os.PathLike:
    return onnx_io.to_proto(candidate) if isinstance(candidate, Graph) else candidate


def _feed(session, inputs: Mapping[str, Any]) -> dict[str, Any]:
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise GraphoptError(
            f"a candidate has input {missing[0]!r} that the reference model does not have"
        )
    return {n: inputs[n] for n in names}


def rerank(
    candidates: Sequence[Candidate],
    reference: Candidate,
    *,
    device: str | DeviceSpec = "cpu",
    threads: int | None = None,
    rounds: int = timing.DEFAULT_ROUNDS,
    sample_seconds: float = timing.DEFAULT_SAMPLE_SECONDS,
    inputs: Mapping[str, np.ndarray] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    on_round: Callable[[int], None] | None = None,
) -> list[Ranked]:
    """Time ``candidates`` (graphs, ModelProtos or paths) end to end against ``reference`` on
    onnxruntime at ORT_ENABLE_ALL and return them fastest first (see the module docstring).

    Inputs are ``inputs`` or random ones for the reference's inputs (``input_shapes`` fixes
    symbolic dimensions, else they are 1). A candidate that onnxruntime cannot load raises
    :class:`~optimizer.errors.CheckUnavailableError`.
    """
    spec = device if isinstance(device, DeviceSpec) else DeviceSpec(device, threads, "all")
    spec = spec.with_opt_level("all")
    options = spec.session_options()
    ref_session = make_session(
        _model(reference), device=spec.device, options=options, label="the reference model"
    )
    if inputs is None:
        inputs = random_inputs(input_specs(ref_session), input_shapes=input_shapes, seed=seed)
    variants: list[tuple[str, Callable[[], object]]] = []
    ref_feed = _feed(ref_session, inputs)
    variants.append((REFERENCE, lambda: ref_session.run(None, ref_feed)))
    for index, candidate in enumerate(candidates):
        session = make_session(
            _model(candidate), device=spec.device, options=options, label=f"candidate {index}"
        )
        feed = _feed(session, inputs)
        variants.append((f"c{index}", lambda s=session, f=feed: s.run(None, f)))
    timings = timing.interleaved(
        variants, reference=REFERENCE, rounds=rounds, sample_seconds=sample_seconds,
        on_round=on_round,
    )  # fmt: skip
    ranked = [
        Ranked(
            index,
            timings[f"c{index}"].latency_ms,
            timings[f"c{index}"].speedup,
            timings[f"c{index}"].speedup_q1,
            timings[f"c{index}"].speedup_q3,
        )
        for index in range(len(candidates))
    ]
    return sorted(ranked, key=lambda r: (-r.speedup, r.index))


def guard(
    original: Candidate,
    optimized: Candidate,
    *,
    device: str | DeviceSpec = "cpu",
    threads: int | None = None,
    rounds: int = timing.DEFAULT_ROUNDS,
    sample_seconds: float = timing.DEFAULT_SAMPLE_SECONDS,
    min_speedup: float = 1.0,
    inputs: Mapping[str, np.ndarray] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
) -> GuardResult:
    """Time ``optimized`` against ``original`` end to end; keep it only when its speedup
    (median of per-round ratios) exceeds ``min_speedup`` (default 1: strictly faster)."""
    (result,) = rerank(
        [optimized], original, device=device, threads=threads, rounds=rounds,
        sample_seconds=sample_seconds, inputs=inputs, input_shapes=input_shapes, seed=seed,
    )  # fmt: skip
    return GuardResult(bool(result.speedup > min_speedup), result.speedup)
