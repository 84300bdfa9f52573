"""Conformance: every ONNX backend test case through import -> optimize -> export.

For each case of ``onnx.backend.test.loader.load_model_tests(kind=K)`` (K in node, simple,
pytorch-converted, pytorch-operator):

1. the original model runs on onnxruntime (CPU, ``ORT_DISABLE_ALL``) on each data set and is
   compared with the expected outputs with the case's rtol/atol, with the semantics of onnx's
   own runner (``Runner.assert_similar_outputs``). Cases that fail here are "not passing
   unmodified": excluded (skipped) and listed with the reason in the summary.
2. ``optimizer.onnx_io.import_model`` + ``Graph.check()`` must succeed on *every* case; for the
   cases that pass unmodified, ``optimizer.optimize(model, check=False)`` must give a model that
   ``onnx.checker.check_model`` accepts and that onnxruntime runs to the expected outputs.

Each case is one test (id ``<kind>/<case name>``). The baseline (step 1) is computed once per
case per session and cached; the summary (per kind: cases, passing unmodified on onnxruntime,
passing after graphopt) is printed at the end of the session by ``conftest.py``.

Last full run (onnx 1.23.2, onnxruntime 1.32.0, CPU):

    kind                 cases  ORT unmodified  after graphopt
    node                  1884            1651            1651
    simple                  23              23              23
    pytorch-converted       82              82              82
    pytorch-operator        35              35              35
"""

from __future__ import annotations

import functools
import glob
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.backend.test.loader import load_model_tests
from onnx.backend.test.runner import Runner, _normalize_tensor

import optimizer
from optimizer import onnx_io, runtime

pytestmark = pytest.mark.conformance

KINDS = ("node", "simple", "pytorch-converted", "pytorch-operator")


@dataclass
class Outcome:
    """What happened to one case; read by the session summary in conftest.py."""

    kind: str
    baseline_ok: bool | None = None  # None: not computed (yet)
    baseline_reason: str | None = None
    optimized_ok: bool | None = None
    optimized_reason: str | None = None
    extra: dict = field(default_factory=dict)


#: case id -> Outcome, filled as the tests run (the summary reads it).
OUTCOMES: dict[str, Outcome] = {}


def _load_cases() -> dict[str, Any]:
    cases: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the node case modules compute with inf/nan on import
        for kind in KINDS:
            for case in sorted(load_model_tests(kind=kind), key=lambda c: c.name):
                cases[f"{kind}/{case.name}"] = case
    return cases


CASES = _load_cases()


# ------------------------------------------------------------------ loading


@dataclass(frozen=True)
class Loaded:
    model: onnx.ModelProto
    data_sets: list[tuple[list[Any], list[Any]]]
    rtol: float
    atol: float


def _load_dir_case(case) -> Loaded:
    model = onnx.load(os.path.join(case.model_dir, "model.onnx"))
    data_sets = []
    for folder in sorted(glob.glob(os.path.join(case.model_dir, "test_data_set*"))):
        inputs: list[Any] = []
        outputs: list[Any] = []
        n_in = len(glob.glob(os.path.join(folder, "input_*.pb")))
        n_out = len(glob.glob(os.path.join(folder, "output_*.pb")))
        # onnx's runner's own reader (it does not use self)
        for i in range(n_in):
            Runner._load_proto(None, os.path.join(folder, f"input_{i}.pb"), inputs,
                               model.graph.input[i].type)  # fmt: skip
        for i in range(n_out):
            Runner._load_proto(None, os.path.join(folder, f"output_{i}.pb"), outputs,
                               model.graph.output[i].type)  # fmt: skip
        data_sets.append((inputs, outputs))
    return Loaded(model, data_sets, case.rtol, case.atol)


@functools.lru_cache(maxsize=1)
def load_case(case_id: str) -> Loaded:
    case = CASES[case_id]
    if case.model_dir is not None:
        return _load_dir_case(case)
    data_sets = [
        ([_normalize_tensor(x) for x in ins], [_normalize_tensor(x) for x in outs])
        for ins, outs in case.data_sets
    ]
    return Loaded(case.model, data_sets, case.rtol, case.atol)


# ------------------------------------------------------------------ running


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 4
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _needs_ort_values(session: ort.InferenceSession, feed: dict[str, Any]) -> bool:
    outputs = any(runtime._ML_TYPE.fullmatch(o.type) for o in session.get_outputs())
    inputs = any(
        isinstance(v, np.ndarray) and runtime._is_ml(v.dtype) for v in feed.values()
    )
    return outputs or inputs


def _run(session: ort.InferenceSession, model: onnx.ModelProto, inputs: list[Any]) -> list[Any]:
    """Run with the data set's inputs bound by position to the graph's inputs."""
    names = [i.name for i in model.graph.input][: len(inputs)]
    feed = dict(zip(names, inputs))
    if _needs_ort_values(session, feed):  # bfloat16/float8 travel as OrtValues
        result = runtime.run(session, feed)
        return [result[o.name] for o in session.get_outputs()]
    return session.run(None, feed)


def assert_outputs(expected: list[Any], actual: list[Any], rtol: float, atol: float) -> None:
    """onnx's runner semantics, plus absent optionals (None) that must match."""
    assert len(actual) == len(expected), f"{len(actual)} outputs, expected {len(expected)}"
    for i, (ref, out) in enumerate(zip(expected, actual)):
        if ref is None or out is None:
            assert ref is None and out is None, f"output {i}: {out!r}, expected {ref!r}"
            continue
        Runner.assert_similar_outputs([ref], [out], rtol=rtol, atol=atol)


def _check_on_ort(model: onnx.ModelProto, loaded: Loaded) -> None:
    session = _session(model)
    for inputs, expected in loaded.data_sets:
        actual = _run(session, model, inputs)
        assert_outputs(expected, actual, loaded.rtol, loaded.atol)


def _outcome(case_id: str) -> Outcome:
    return OUTCOMES.setdefault(case_id, Outcome(case_id.split("/", 1)[0]))


def baseline(case_id: str) -> Outcome:
    """Whether the unmodified model passes on onnxruntime (computed once per session)."""
    outcome = _outcome(case_id)
    if outcome.baseline_ok is None:
        try:
            _check_on_ort(load_case(case_id).model, load_case(case_id))
            outcome.baseline_ok = True
        except Exception as exc:  # noqa: BLE001 - any failure excludes the case
            outcome.baseline_ok = False
            outcome.baseline_reason = _first_line(exc)
    return outcome


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), text)
    line = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", line)
    return f"{type(exc).__name__}: {line[:200]}"


# ------------------------------------------------------------------ the test


@pytest.mark.parametrize("case_id", list(CASES))
def test_backend_case(case_id: str) -> None:
    loaded = load_case(case_id)
    outcome = _outcome(case_id)

    # The importer and the IR checker must accept every case.
    graph, _ = onnx_io.import_model(loaded.model)
    graph.check()

    if not baseline(case_id).baseline_ok:
        pytest.skip("not passing unmodified on onnxruntime (reason in the conformance summary)")

    outcome.optimized_ok = False
    try:
        result = optimizer.optimize(loaded.model, check=False)
        onnx.checker.check_model(result, full_check=False)
        _check_on_ort(result, loaded)
    except Exception as exc:
        outcome.optimized_reason = _first_line(exc)
        raise
    outcome.optimized_ok = True
