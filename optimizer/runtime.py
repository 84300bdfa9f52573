"""onnxruntime sessions and the numeric equivalence check between two ONNX models.

:func:`compare_models` runs a *reference* and a *candidate* model on the same inputs and
compares every reference output by name. Its sessions default to ``opt_level="disable"``
(``ORT_DISABLE_ALL``) so that onnxruntime's own graph rewrites can neither hide nor add a
difference: the check is about the semantics of the graph graphopt wrote. Pass ``options``
to change that. :func:`make_session` on its own defaults to ``opt_level="all"``.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx.external_data_helper import load_external_data_for_model, uses_external_data

from optimizer.errors import (
    CheckFailedError,
    CheckUnavailableError,
    GraphoptError,
    ModelLoadError,
    ShapeError,
)

try:
    import ml_dtypes
except ImportError:  # pragma: no cover - exercised by monkeypatching in the tests
    ml_dtypes = None

ModelLike = onnx.ModelProto | str | os.PathLike
Feed = Mapping[str, Any]

#: Protos at least this big are saved with external data before ORT loads them (2 GB limit).
PROTO_SIZE_LIMIT = int(1.8 * 2**30)
_CPU, _CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
_EXT_DIR_KEY = "session.model_external_initializers_file_folder_path"
_LEVELS = ort.GraphOptimizationLevel
_OPT_LEVELS = {
    "disable": _LEVELS.ORT_DISABLE_ALL,
    "basic": _LEVELS.ORT_ENABLE_BASIC,
    "extended": _LEVELS.ORT_ENABLE_EXTENDED,
    "all": _LEVELS.ORT_ENABLE_ALL,
}
_C = ort.capi.onnxruntime_pybind11_state
#: What onnxruntime raises: its own exception classes plus the Python wrapper's.
_ORT_ERRORS = (
    *(v for v in vars(_C).values() if isinstance(v, type) and issubclass(v, Exception)),
    RuntimeError,
    ValueError,
    TypeError,
)
#: Element types numpy lacks; they travel as ml_dtypes arrays.
_ML_TYPE = re.compile(r"tensor\((bfloat16|float8\w+)\)")


def available_devices() -> list[str]:
    """Devices the installed onnxruntime can run on: always ``"cpu"``, plus ``"cuda"``."""
    return ["cpu"] + (["cuda"] if _CUDA in ort.get_available_providers() else [])


def providers_for(device: str = "auto") -> list[str | tuple[str, dict[str, Any]]]:
    """Execution providers for ``device`` ("cpu", "cuda" with CPU fallback, or "auto")."""
    if device == "auto":
        device = "cuda" if "cuda" in available_devices() else "cpu"
    if device == "cpu":
        return [_CPU]
    if device == "cuda":
        if "cuda" not in available_devices():
            raise CheckUnavailableError(
                "device 'cuda' requested but onnxruntime has no CUDAExecutionProvider "
                f"(available: {', '.join(ort.get_available_providers())}); "
                "install onnxruntime-gpu or use device 'cpu'"
            )
        return [_CUDA, _CPU]
    raise GraphoptError(f"unknown device {device!r}: expected 'auto', 'cpu' or 'cuda'")


@dataclass(frozen=True)
class SessionOptionsSpec:
    """The onnxruntime session settings graphopt uses (see :func:`make_session`)."""

    opt_level: str = "all"  # "disable" | "basic" | "extended" | "all"
    intra_op_threads: int | None = None  # None: onnxruntime's default
    allow_spinning: bool = True
    log_severity: int = 3  # 0 verbose ... 4 fatal

    def __post_init__(self) -> None:
        if self.opt_level not in _OPT_LEVELS:
            raise GraphoptError(
                f"unknown optimization level {self.opt_level!r}: expected one of "
                + ", ".join(_OPT_LEVELS)
            )
        if self.intra_op_threads is not None and self.intra_op_threads < 0:
            raise GraphoptError(f"intra_op_threads must be >= 0, got {self.intra_op_threads}")

    def to_ort(self) -> ort.SessionOptions:
        """Build the :class:`onnxruntime.SessionOptions` these settings describe."""
        so = ort.SessionOptions()
        so.graph_optimization_level = _OPT_LEVELS[self.opt_level]
        if self.intra_op_threads is not None:
            so.intra_op_num_threads = self.intra_op_threads
        so.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if self.allow_spinning else "0"
        )
        so.log_severity_level = self.log_severity
        return so


#: Session settings of the equivalence check: no ORT rewrites (see the module docstring).
CHECK_OPTIONS = SessionOptionsSpec(opt_level="disable")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", lines[0].strip())


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_tensors(sub)


def _has_external_refs(model: onnx.ModelProto) -> bool:
    return any(
        uses_external_data(t) and not t.HasField("raw_data") for t in _all_tensors(model.graph)
    )


def _describe(model: ModelLike) -> str:
    if isinstance(model, onnx.ModelProto):
        return f"model '{model.graph.name}'" if model.graph.name else "the in-memory model"
    return os.fspath(model)


def make_session(
    model: ModelLike,
    *,
    device: str = "auto",
    options: SessionOptionsSpec | None = None,
    external_data_dir: str | os.PathLike | None = None,
    label: str | None = None,
) -> ort.InferenceSession:
    """Create an onnxruntime session for a model file or an in-memory :class:`onnx.ModelProto`.

    A path is handed to ORT as is, so external data resolves relative to the file. A proto is
    serialized in memory, unless it is too big for protobuf (``PROTO_SIZE_LIMIT``): then a copy
    is saved with external data to a temporary folder and loaded from there. External-data
    references in a proto (``onnx.load(..., load_external_data=False)``) resolve against
    ``external_data_dir``; without it they raise :class:`CheckUnavailableError`. ``label``
    names the model in error messages. ORT load failures raise
    :class:`CheckUnavailableError`; a missing file raises :class:`ModelLoadError`.
    """
    options = options or SessionOptionsSpec()
    providers = providers_for(device)
    label = label or _describe(model)
    so = options.to_ort()
    try:
        if not isinstance(model, onnx.ModelProto):
            if not os.path.isfile(model):
                raise ModelLoadError(f"model file not found: {os.fspath(model)}")
            return ort.InferenceSession(os.fspath(model), so, providers=providers)
        refs = _has_external_refs(model)
        if refs and external_data_dir is None:
            raise CheckUnavailableError(
                f"{label} references external data files but no external_data_dir was given "
                "to resolve them; pass the model's path instead"
            )
        if model.ByteSize() < PROTO_SIZE_LIMIT:
            if refs:
                so.add_session_config_entry(_EXT_DIR_KEY, os.path.abspath(external_data_dir))
            return ort.InferenceSession(model.SerializeToString(), so, providers=providers)
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # onnx.save(save_as_external_data=True) rewrites its argument
        if refs:
            load_external_data_for_model(copy, os.fspath(external_data_dir))
        with tempfile.TemporaryDirectory(prefix="graphopt-", ignore_cleanup_errors=True) as tmp:
            path = os.path.join(tmp, "model.onnx")
            onnx.save(
                copy,
                path,
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location="model.onnx.data",
                convert_attribute=True,
            )
            del copy
            return ort.InferenceSession(path, so, providers=providers)
    except _ORT_ERRORS as exc:
        raise CheckUnavailableError(f"onnxruntime cannot load {label}: {_first_line(exc)}") from exc


@dataclass(frozen=True)
class InputSpec:
    """One model input: numpy dtype and shape (int, symbolic name or None per dim).

    ``shape`` is None when the rank is unknown.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...] | None


def _dtype_for(ort_type: str, what: str) -> np.dtype:
    m = re.fullmatch(r"tensor\((\w+)\)", ort_type)
    if m is None:
        raise CheckUnavailableError(
            f"{what} has type {ort_type}, not a tensor; the numeric check handles tensors only"
        )
    if _ML_TYPE.fullmatch(ort_type) and ml_dtypes is None:
        raise CheckUnavailableError(
            f"{what} has type {ort_type}, which needs the ml_dtypes package (pip install ml-dtypes)"
        )
    try:
        elem = onnx.TensorProto.DataType.Value(m.group(1).upper())
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem))
    except (ValueError, KeyError, TypeError):
        dtype = None
    if dtype is None or (dtype.kind == "V" and not _ML_TYPE.fullmatch(ort_type)):
        raise CheckUnavailableError(f"{what} has type {ort_type}, which the check cannot feed")
    return dtype


def input_specs(
    session: ort.InferenceSession, *, model: onnx.ModelProto | None = None
) -> list[InputSpec]:
    """Describe the session's inputs. Non-tensor inputs raise :class:`CheckUnavailableError`.

    ORT reports an input of unknown rank as a scalar; pass the ``model`` (graph inputs are
    enough) to tell them apart.
    """
    unranked = set()
    if model is not None:
        unranked = {
            vi.name
            for vi in model.graph.input
            if vi.type.HasField("tensor_type") and not vi.type.tensor_type.HasField("shape")
        }
    specs = []
    for arg in session.get_inputs():
        dtype = _dtype_for(arg.type, f"input '{arg.name}'")
        shape = (
            None
            if arg.name in unranked
            else tuple(
                d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) and d else None)
                for d in arg.shape
            )
        )
        specs.append(InputSpec(arg.name, dtype, shape))
    return specs


def parse_input_shapes(specs: Iterable[str]) -> dict[str, tuple[int, ...]]:
    """Parse onnxsim-style ``"name:1,3,224,224"`` overrides (split on the last ':')."""
    shapes: dict[str, tuple[int, ...]] = {}
    for text in specs:
        name, sep, dims = text.rpartition(":")
        name = name.strip()
        if not sep or not name:
            raise ShapeError(f"bad input shape {text!r}: expected 'name:d1,d2,...'")
        parts = [p.strip() for p in dims.split(",")]
        if not all(re.fullmatch(r"[0-9]+", p) and int(p) > 0 for p in parts):
            raise ShapeError(
                f"bad input shape {text!r}: dimensions must be positive integers, got {dims!r}"
            )
        if name in shapes:
            raise ShapeError(f"bad input shape {text!r}: input '{name}' is given twice")
        shapes[name] = tuple(int(p) for p in parts)
    return shapes


def _fmt_shape(shape: Sequence[Any]) -> str:
    return "(" + ",".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _resolve_shape(spec: InputSpec, override: tuple[int, ...] | None, default_dim: int):
    if spec.shape is None:
        if override is None:
            raise CheckUnavailableError(
                f"input '{spec.name}' has unknown rank; give its shape, "
                f"for example '{spec.name}:1,3,224,224'"
            )
        return override
    if override is None:
        return tuple(d if isinstance(d, int) else default_dim for d in spec.shape)
    if len(override) != len(spec.shape):
        raise ShapeError(
            f"input '{spec.name}': override {_fmt_shape(override)} has rank {len(override)}, "
            f"model expects rank {len(spec.shape)}"
        )
    for axis, (got, want) in enumerate(zip(override, spec.shape, strict=True)):
        if isinstance(want, int) and got != want:
            raise ShapeError(
                f"input '{spec.name}': override {_fmt_shape(override)} has {got} at axis {axis}, "
                f"model expects {_fmt_shape(spec.shape)}"
            )
    return override


def _random_array(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...]):
    # numpy returns scalars, not arrays, for shape (); onnxruntime only takes arrays.
    return np.asarray(_random_values(rng, dtype, shape))


def _random_values(rng: np.random.Generator, dtype: np.dtype, shape: tuple[int, ...]):
    if dtype.kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if _is_float(dtype):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        return rng.integers(0, 4, size=shape).astype(dtype)
    size = math.prod(shape)
    words = [
        "".join(chr(c) for c in rng.integers(97, 123, rng.integers(1, 9))) for _ in range(size)
    ]
    out = np.empty(size, dtype=object)
    out[:] = words
    return out.reshape(shape)


def random_inputs(
    specs: Sequence[InputSpec],
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    seed: int = 0,
    default_dim: int = 1,
) -> dict[str, np.ndarray]:
    """Deterministic random inputs for ``specs``; symbolic dims take the override or default_dim.

    Floats are standard normal, integers lie in [0, 4) (so indices stay valid), bools are
    random and strings are short lowercase words. Overrides that name an unknown input or
    contradict the model raise :class:`ShapeError`.
    """
    overrides = {k: tuple(int(d) for d in v) for k, v in (input_shapes or {}).items()}
    names = [s.name for s in specs]
    unknown = [k for k in overrides if k not in names]
    if unknown:
        raise ShapeError(
            f"input shape given for unknown input '{unknown[0]}'; the model's inputs are: "
            + (", ".join(names) or "(none)")
        )
    rng = np.random.default_rng(seed)
    return {
        s.name: _random_array(rng, s.dtype, _resolve_shape(s, overrides.get(s.name), default_dim))
        for s in specs
    }


def _is_ml(dtype: np.dtype) -> bool:
    """bfloat16 or float8: ml_dtypes types that ORT's numpy bridge does not know."""
    return dtype.kind == "V" and (dtype.name == "bfloat16" or dtype.name.startswith("float8"))


def _is_float(dtype: np.dtype) -> bool:
    return dtype.kind in "fc" or _is_ml(dtype)


def _to_ortvalue(value: Any) -> ort.OrtValue:
    if isinstance(value, ort.OrtValue):
        return value
    arr = np.ascontiguousarray(value)
    if not _is_ml(arr.dtype):
        return ort.OrtValue.ortvalue_from_numpy(arr)
    elem = onnx.helper.np_dtype_to_tensor_dtype(arr.dtype)
    raw = arr.view(np.dtype(f"u{arr.dtype.itemsize}"))
    return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(raw, onnx_element_type=elem)


def _from_ortvalue(value: ort.OrtValue, ort_type: str, what: str) -> Any:
    if not _ML_TYPE.fullmatch(ort_type):
        return value.numpy()
    if value.device_name().lower() != "cpu":
        raise CheckUnavailableError(f"{what} of type {ort_type} was not returned on the CPU")
    nbytes = value.tensor_size_in_bytes()
    buf = ctypes.string_at(value.data_ptr(), nbytes) if nbytes else b""
    dtype = _dtype_for(ort_type, what)
    return np.frombuffer(buf, dtype=dtype).reshape(value.shape()).copy()


def run(session: ort.InferenceSession, inputs: Feed, *, label: str = "the model") -> dict[str, Any]:
    """Run ``session`` on ``inputs``; returns every output by name.

    bfloat16/float8 inputs and outputs travel as ml_dtypes arrays. ORT failures raise
    :class:`CheckUnavailableError` naming ``label``.
    """
    outputs = session.get_outputs()
    special = any(_ML_TYPE.fullmatch(o.type) for o in outputs) or any(
        isinstance(v, ort.OrtValue) or _is_ml(np.asarray(v).dtype) for v in inputs.values()
    )
    try:
        if not special:
            values = session.run(None, dict(inputs))
        else:
            ort_values = session.run_with_ort_values(
                None, {k: _to_ortvalue(v) for k, v in inputs.items()}
            )
            values = [
                _from_ortvalue(v, o.type, f"output '{o.name}'")
                for v, o in zip(ort_values, outputs, strict=True)
            ]
    except _ORT_ERRORS as exc:
        raise CheckUnavailableError(f"onnxruntime cannot run {label}: {_first_line(exc)}") from exc
    return {o.name: v for o, v in zip(outputs, values, strict=True)}


@dataclass(frozen=True)
class OutputComparison:
    """How one output compared. Errors are NaN where they do not apply (strings, bad shape)."""

    name: str
    ok: bool
    max_abs_err: float
    max_rel_err: float
    reason: str | None = None


@dataclass(frozen=True)
class EquivalenceReport:
    """Result of :func:`compare_models`; ``error`` is set when the candidate could not run."""

    ok: bool
    outputs: list[OutputComparison]
    inputs_used: dict[str, Any]
    rtol: float = 1e-3
    atol: float = 1e-4
    num_samples: int = 1
    error: str | None = None

    def summary(self) -> str:
        """One line: why the check failed, or what matched."""
        if self.error is not None:
            return self.error
        bad = [o for o in self.outputs if not o.ok]
        if not bad:
            return (
                f"{len(self.outputs)} output(s) match within rtol {_fmt_tol(self.rtol)}, "
                f"atol {_fmt_tol(self.atol)} on {self.num_samples} sample(s)"
            )
        more = ", ".join(o.name for o in bad[1:])
        return str(bad[0].reason) + (f" (also differing: {more})" if more else "")


def _fmt_tol(x: float) -> str:
    return f"{x:.0e}" if x and float(f"{x:.0e}") == x else f"{x:g}"


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape)) if shape else ()


def _compare_arrays(ref: Any, cand: Any, rtol: float, atol: float):
    """Return (ok, max_abs_err, max_rel_err, reason without the output's name)."""
    ref, cand, nan = np.asarray(ref), np.asarray(cand), math.nan
    if ref.shape != cand.shape:
        return False, nan, nan, f"shape {cand.shape} differs from reference shape {ref.shape}"
    if ref.dtype != cand.dtype:
        return False, nan, nan, f"dtype {cand.dtype} differs from reference dtype {ref.dtype}"
    if ref.size == 0:
        return True, 0.0, 0.0, None
    if not _is_float(ref.dtype):  # bool, integers, strings: exact
        equal = np.asarray(ref == cand, dtype=bool).reshape(ref.shape)
        if equal.all():
            return True, 0.0, 0.0, None
        wide = ref.dtype.kind in "iub"
        err = float(np.abs(ref.astype(float) - cand.astype(float)).max()) if wide else nan
        i = _index(int(np.argmin(equal)), ref.shape)
        why = f"{int((~equal).sum())} of {ref.size} values differ ({ref.dtype} must match "
        return False, err, nan, why + f"exactly), first at index {i}: {ref[i]!r} vs {cand[i]!r}"
    # A tolerance below a type's resolution cannot be met by any reordering of the same
    # arithmetic: never ask for better than two ulps of the output type (float16: ~2e-3).
    floor = 2 * float(_machine_eps(ref.dtype))
    rtol, atol = max(rtol, floor), max(atol, floor) if floor > 1e-6 else atol
    wide = np.complex128 if ref.dtype.kind == "c" else np.float64
    r, c = ref.astype(wide), cand.astype(wide)
    with np.errstate(all="ignore"):
        finite = np.isfinite(r) & np.isfinite(c)
        err = np.where(finite, np.abs(c - r), 0.0)
        mag = np.abs(r)
        rel = np.where(mag > 0, err / np.where(mag > 0, mag, 1.0), np.where(err > 0, np.inf, 0.0))
        max_abs, max_rel = float(err.max()), float(rel.max())
        odd = ~finite & ~((np.isnan(r) & np.isnan(c)) | (r == c))  # NaN and inf must match
        bad = finite & (err > atol + rtol * mag)
    if odd.any():
        i = _index(int(np.argmax(odd)), r.shape)
        why = f"NaN/inf mismatch at index {i}: {r[i]:.6g} vs {c[i]:.6g}"
        return False, max_abs, max_rel, why + f" ({int(odd.sum())} of {r.size} values)"
    if not bad.any():
        return True, max_abs, max_rel, None
    i = _index(int(np.argmax(np.where(bad, err, -1.0))), r.shape)
    why = f"max abs err {err[i]:.1e} > atol {_fmt_tol(atol)} + rtol {_fmt_tol(rtol)}*|ref| at "
    why += f"index {i}: {r[i]:.6g} vs {c[i]:.6g} ({int(bad.sum())} of {r.size} values out of "
    return False, max_abs, max_rel, why + "tolerance)"


def _machine_eps(dtype: np.dtype) -> float:
    try:
        return float(np.finfo(dtype).eps)
    except (TypeError, ValueError):
        return float(ml_dtypes.finfo(dtype).eps) if ml_dtypes is not None else 0.0


def _compare_values(ref: Any, cand: Any, rtol: float, atol: float):
    if not (isinstance(ref, list) and isinstance(cand, list)):
        return _compare_arrays(ref, cand, rtol, atol)
    if len(ref) != len(cand):  # sequence outputs
        return False, math.nan, math.nan, f"sequence of {len(cand)} != reference's {len(ref)}"
    results = [_compare_values(a, b, rtol, atol) for a, b in zip(ref, cand, strict=True)]
    bad = [(k, r[3]) for k, r in enumerate(results) if not r[0]]
    errs = [_worst(r[k] for r in results) for k in (1, 2)]
    return not bad, errs[0], errs[1], f"element {bad[0][0]}: {bad[0][1]}" if bad else None


def _worst(values: Iterable[float]) -> float:
    known = [v for v in values if not math.isnan(v)]
    return max(known) if known else math.nan


def compare_outputs(
    name: str, ref: Any, cand: Any, *, rtol: float = 1e-3, atol: float = 1e-4
) -> OutputComparison:
    """Compare one output: shapes and dtypes equal, NaN and inf in the same places, integers,
    bools and strings exactly, floats within ``atol + rtol * |ref|``."""
    ok, max_abs, max_rel, reason = _compare_values(ref, cand, rtol, atol)
    return OutputComparison(
        name, ok, max_abs, max_rel, None if ok else f"output '{name}': {reason}"
    )


def _samples(ref_sess, reference, inputs, input_shapes, seed, num_samples) -> list[dict]:
    if isinstance(inputs, Mapping):
        samples = [dict(inputs)]
    elif inputs is not None:
        samples = [dict(x) for x in inputs]
    else:
        specs = input_specs(ref_sess)
        if any(s.shape == () for s in specs):  # maybe unknown rank: ask the graph
            proto = reference
            if not isinstance(proto, onnx.ModelProto):
                proto = onnx.load(os.fspath(reference), load_external_data=False)
            specs = input_specs(ref_sess, model=proto)
        samples = [
            random_inputs(specs, input_shapes=input_shapes, seed=seed + k)
            for k in range(num_samples)
        ]
    if not samples:
        raise GraphoptError("the equivalence check needs at least one input sample")
    return samples


def compare_models(
    reference: ModelLike,
    candidate: ModelLike,
    *,
    inputs: Feed | Sequence[Feed] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    device: str = "cpu",
    seed: int = 0,
    num_samples: int = 1,
    options: SessionOptionsSpec | None = None,
    external_data_dir: str | os.PathLike | None = None,
) -> EquivalenceReport:
    """Run both models on the same inputs and compare every reference output by name.

    Inputs are generated from the reference's inputs (seeds ``seed .. seed+num_samples-1``)
    unless given (one feed or a list of feeds). The candidate receives only the inputs it
    declares. Sessions use ``options`` (default :data:`CHECK_OPTIONS`: ORT optimizations off).
    A reference that cannot load or run raises :class:`CheckUnavailableError`; a candidate that
    cannot gives a report with ``ok=False``.
    """
    kw: dict[str, Any] = {"device": device, "options": options or CHECK_OPTIONS}
    kw["external_data_dir"] = external_data_dir
    ref_sess = make_session(reference, label="the reference model", **kw)
    samples = _samples(ref_sess, reference, inputs, input_shapes, seed, num_samples)
    first, n = samples[0], len(samples)
    try:
        cand_sess = make_session(candidate, label="the candidate model", **kw)
    except CheckUnavailableError as exc:
        return EquivalenceReport(False, [], first, rtol, atol, n, str(exc))
    cand_inputs = [i.name for i in cand_sess.get_inputs()]
    extra = set(cand_inputs) - {i.name for i in ref_sess.get_inputs()}
    if extra:
        why = f"the candidate model has inputs the reference lacks: {', '.join(sorted(extra))}"
        return EquivalenceReport(False, [], first, rtol, atol, n, why)
    cand_names = {o.name for o in cand_sess.get_outputs()}
    results: dict[str, list[OutputComparison]] = {o.name: [] for o in ref_sess.get_outputs()}
    for name in set(results) - cand_names:
        why = f"output '{name}' is missing from the candidate model (its outputs: "
        why += f"{', '.join(sorted(cand_names)) or 'none'})"
        results[name].append(OutputComparison(name, False, math.nan, math.nan, why))
    for k, sample in enumerate(samples):
        tag = f" (sample {k + 1} of {n})" if n > 1 else ""
        ref_out = run(ref_sess, sample, label="the reference model" + tag)
        feed = {name: sample[name] for name in cand_inputs if name in sample}
        try:
            cand_out = run(cand_sess, feed, label="the candidate model" + tag)
        except CheckUnavailableError as exc:
            return EquivalenceReport(False, [], first, rtol, atol, n, str(exc))
        for name in results.keys() & cand_names:
            ok, max_abs, max_rel, why = _compare_values(ref_out[name], cand_out[name], rtol, atol)
            why = None if ok else f"output '{name}'{tag}: {why}"
            results[name].append(OutputComparison(name, ok, max_abs, max_rel, why))
    outputs = []
    for name, rs in results.items():
        why = next((r.reason for r in rs if not r.ok), None)
        abs_err, rel_err = _worst(r.max_abs_err for r in rs), _worst(r.max_rel_err for r in rs)
        outputs.append(OutputComparison(name, why is None, abs_err, rel_err, why))
    return EquivalenceReport(all(o.ok for o in outputs), outputs, first, rtol, atol, n)


def assert_equivalent(
    reference: ModelLike, candidate: ModelLike, **kwargs: Any
) -> EquivalenceReport:
    """:func:`compare_models`, raising :class:`CheckFailedError` with its summary when not ok."""
    report = compare_models(reference, candidate, **kwargs)
    if not report.ok:
        raise CheckFailedError(report.summary())
    return report
