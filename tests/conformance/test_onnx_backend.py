"""Conformance: every ONNX backend test case through import -> optimize -> export.

For each case of ``onnx.backend.test.loader.load_model_tests(kind=K)`` (K in node, simple,
pytorch-converted, pytorch-operator):

1. The original model runs on onnxruntime (CPU, ``ORT_DISABLE_ALL``) on each data set and is
   compared with the expected outputs with the case's rtol/atol, with the semantics of onnx's
   own runner (``Runner.assert_similar_outputs``; sequences elementwise, absent optionals
   equal). Cases that fail here are "not passing unmodified": skipped, with the reason listed
   in the summary (``-v``).
2. ``optimizer.onnx_io.import_model`` + ``Graph.check()`` must succeed on *every* case. For the
   cases that pass unmodified, ``optimizer.optimize(model, check=False)`` must give a model that
   ``onnx.checker.check_model`` accepts and that onnxruntime runs to the expected outputs.
3. The same again with the first data set's tensor inputs baked in as initializers, so that
   constant folding evaluates (nearly) the whole model through onnxruntime.

Each case is one test (id ``<kind>/<case name>``). The baseline (step 1) is computed once per
case per session and cached; the summary (per kind: cases, passing unmodified on onnxruntime,
passing after graphopt) is printed at the end of the session by ``conftest.py``.

Last full run (onnx 1.23.2, onnxruntime 1.32.0, CPU; about 25 s on 2 cores):

    kind                 cases  ORT unmodified  after graphopt
    node                  1884            1740            1740
    simple                  23              17              17
    pytorch-converted       82              59              59
    pytorch-operator        35              24              24

The 184 exclusions are onnxruntime's: no kernel for the opset/type (Add/Gemm/PRelu/
BatchNormalization-6, AveragePool-1, bfloat16 and 2/4-bit ops, opsets 22-28 additions),
unregistered preview/training domains, StringNormalizer locales, batchwise RNN layouts,
random outputs (training Dropout, Bernoulli) and numerics beyond tolerance (DFT/STFT, fp16
Attention, align_corners Resize).
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.backend.test.loader import load_model_tests
from onnx.backend.test.runner import Runner, _normalize_tensor

import optimizer
from optimizer import onnx_io

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


def _is_special(dtype: np.dtype) -> bool:
    """Element types numpy lacks (bfloat16, float8, 4- and 2-bit): ml_dtypes arrays."""
    return dtype.type.__module__.startswith("ml_dtypes")


def _special_output(ort_type: str) -> bool:
    m = re.fullmatch(r"tensor\((\w+)\)", ort_type)
    if m is None:
        return False
    try:
        elem = onnx.TensorProto.DataType.Value(m.group(1).upper())
        return _is_special(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)))
    except (ValueError, KeyError, TypeError):
        return False


def _to_ort_value(value: np.ndarray) -> ort.OrtValue:
    if not _is_special(value.dtype):
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value))
    proto = onnx.numpy_helper.from_array(value)  # raw bytes in ONNX's (packed) layout
    result = ort.OrtValue.ortvalue_from_shape_and_type(list(value.shape), proto.data_type)
    assert result.tensor_size_in_bytes() == len(proto.raw_data)
    ctypes.memmove(result.data_ptr(), proto.raw_data, len(proto.raw_data))
    return result


def _from_ort_value(value: ort.OrtValue, ort_type: str) -> Any:
    if not _special_output(ort_type):
        return value.numpy()
    proto = onnx.TensorProto()
    proto.data_type = value.element_type()
    proto.dims.extend(value.shape())
    proto.raw_data = ctypes.string_at(value.data_ptr(), value.tensor_size_in_bytes())
    return onnx.numpy_helper.to_array(proto)


def _run(session: ort.InferenceSession, model: onnx.ModelProto, inputs: list[Any]) -> list[Any]:
    """Run with the data set's inputs bound by position to the graph's inputs."""
    names = [i.name for i in model.graph.input][: len(inputs)]
    # numpy scalars become 0-d arrays, as in onnxruntime.backend
    feed = {
        n: np.asarray(v) if isinstance(v, np.generic) else v
        for n, v in zip(names, inputs, strict=True)
    }
    special = any(_special_output(o.type) for o in session.get_outputs()) or any(
        isinstance(v, np.ndarray) and _is_special(v.dtype) for v in feed.values()
    )
    if not special:
        return session.run(None, feed)
    values = session.run_with_ort_values(None, {k: _to_ort_value(v) for k, v in feed.items()})
    return [_from_ort_value(v, o.type) for v, o in zip(values, session.get_outputs(), strict=True)]


def assert_outputs(expected: list[Any], actual: list[Any], rtol: float, atol: float) -> None:
    """onnx's runner semantics (``Runner.assert_similar_outputs``) per tensor; sequences
    elementwise and absent optionals (None), which the runner's recursion does not handle."""
    assert len(actual) == len(expected), f"{len(actual)} outputs, expected {len(expected)}"
    for i, (ref, out) in enumerate(zip(expected, actual, strict=True)):
        _assert_similar(ref, out, rtol, atol, f"output {i}")


def _assert_similar(ref: Any, out: Any, rtol: float, atol: float, where: str) -> None:
    if ref is None or out is None:
        assert ref is None and out is None, f"{where}: {out!r}, expected {ref!r}"
    elif isinstance(ref, (list, tuple)) or isinstance(out, (list, tuple)):
        assert isinstance(ref, (list, tuple)) and isinstance(out, (list, tuple)), (
            f"{where}: {type(out).__name__}, expected {type(ref).__name__}"
        )
        assert len(out) == len(ref), f"{where}: sequence of {len(out)}, expected {len(ref)}"
        for j, (r, o) in enumerate(zip(ref, out, strict=True)):
            _assert_similar(r, o, rtol, atol, f"{where}[{j}]")
    else:
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


def with_inputs_as_constants(
    model: onnx.ModelProto, inputs: list[Any]
) -> tuple[onnx.ModelProto, list[Any]]:
    """The model with every tensor input of the data set baked in as an initializer (still
    listed as an input for IR < 4, where that makes it a constant), and what is left to feed."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    kept, feed = [], []
    for info, value in zip(list(graph.input), inputs, strict=False):
        if isinstance(value, np.ndarray) and info.type.HasField("tensor_type"):
            graph.initializer.append(onnx.numpy_helper.from_array(value, info.name))
            if result.ir_version < 4:
                kept.append(info)
        else:
            kept.append(info)
            feed.append(value)
    rest = list(graph.input)[len(inputs) :]
    del graph.input[:]
    graph.input.extend(kept + rest)
    return result, feed


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

        # Constant folding evaluates (nearly) the whole model once its inputs are constants.
        inputs, expected = loaded.data_sets[0]
        model, feed = with_inputs_as_constants(loaded.model, inputs)
        folded = optimizer.optimize(model, check=False)
        onnx.checker.check_model(folded, full_check=False)
        actual = _run(_session(folded), folded, feed)
        assert_outputs(expected, actual, loaded.rtol, loaded.atol)
    except Exception as exc:
        outcome.optimized_reason = _first_line(exc)
        raise
    outcome.optimized_ok = True
