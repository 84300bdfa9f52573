"""One node as a model of its own: its timing signature, the model, inputs, and its timing.

:func:`signature` says what an isolated timing of a node depends on (op, domain, opset,
attributes, input and output types with symbolic dimensions bound, which inputs are constant
and the values of those that shape the kernel), and refuses nodes that cannot run alone
(:class:`Untimeable`). :func:`build` makes the one-node ONNX model and its inputs:

- operands that are not constants become graph inputs of the node's types (symbolic dims
  bound to 1 or to a given binding);
- constants become initializers: integer, boolean and small constants keep their real
  values (shapes, axes, indices and scalar exponents change the kernel), larger floating-point
  ones become random data of the same shape and type (only the values differ, not the work);
- floating-point operands computed from constants alone (a Conv weight a rewrite padded, a
  bias reshaped, :func:`computed_from_constants`) are constants too, of random data:
  onnxruntime folds them before it runs or fuses anything, so the node runs with a constant
  there (a Conv with a run-time weight gets neither NCHWc nor prepacking, and an Add of a
  run-time "bias" is not fused into the Conv before it);
- integer operands computed at run time (a shape built from ``Shape``) get values that keep
  the kernel valid where the node's output type tells them (Reshape, Expand, ConstantOfShape,
  Tile), small random indices elsewhere.

:func:`build_chain` does the same for a short chain of nodes (a producer and the consumers
onnxruntime may fuse into it), and :func:`runs_as_one_kernel` asks onnxruntime whether it does.

:func:`time_model` runs a model through an IOBinding (inputs bound once, outputs into
preallocated buffers) and returns the best over samples of the time per call (on the CPU,
sampling until a probe has seen the machine as fast as at its quietest, :class:`LoadProbe`:
a burst of other processes otherwise inflates a timing for good), less
onnxruntime's fixed cost of a ``run`` call (:func:`run_overhead`), which a node inside a whole
model does not pay. A Conv or pool on the CPU is timed as the NCHWc kernel onnxruntime runs
inside a CNN, without the per-node layout reorders (:func:`nchwc_core`). A node with large
weights is timed as copies run in turn, each with its own weights (:func:`replicate`), so that
its weights come from memory as they do inside a model larger than the cache.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from optimizer.cost.additive import computed_from_constants
from optimizer.cost.device import DeviceSpec
from optimizer.errors import GraphoptError
from optimizer.ir import Attr, Node, TensorType, Value
from optimizer.ir.ops import CONTROL_FLOW_OPS
from optimizer.ir.types import DType
from optimizer.onnx_io.schemas import schema_of
from optimizer.onnx_io.types import attr_to_proto
from optimizer.runtime import make_session
from optimizer.timing import calls_per_sample

__all__ = [
    "Isolated",
    "LoadProbe",
    "Signature",
    "Untimeable",
    "build",
    "build_chain",
    "cold_copies",
    "computed_from_constants",
    "load_probe",
    "nchwc_core",
    "optimized_model",
    "raw_seconds",
    "replicate",
    "run_overhead",
    "runs_as_one_kernel",
    "signature",
    "time_model",
]

#: Version of the signature's layout; bump when what a timing depends on changes.
#: 2: nodes with large constants are timed with their weights out of cache (:func:`replicate`).
SIGNATURE_VERSION = 2
#: Floating-point constants up to this many elements keep their values (Pow's exponent,
#: Clip's bounds, LayerNorm's epsilon tensor ...), larger ones become random data.
SMALL_CONSTANT = 16
#: Default opsets when a node is priced before any graph told its model's opsets.
DEFAULT_OPSETS: tuple[tuple[str, int], ...] = (("", 17),)
#: The newest standard opset tried for a node that does not fit the default one (onnxruntime
#: runs opset 21 since 1.18).
NEWEST_OPSET = 21
#: Timing of one node: the best of SAMPLES samples lasting at least SAMPLE_SECONDS each, and
#: of more samples (up to 4 x SAMPLES) while they took less than BUDGET_SECONDS in all.
SAMPLE_SECONDS = 0.0005
SAMPLES = 7
BUDGET_SECONDS = 0.015
WARMUP = 2
#: Load-aware timing (:class:`LoadProbe`): a sample is quiet when a probe sample taken just
#: before it ran within QUIET_FACTOR of the probe's best; sampling goes on (at most
#: QUIET_BUDGET_SECONDS in all) until SAMPLES quiet ones were taken. A probe sample lasts
#: PROBE_SECONDS.
QUIET_FACTOR = 1.25
QUIET_BUDGET_SECONDS = 0.06
PROBE_SECONDS = 0.0002
#: Cold weights (:func:`cold_copies`): a node whose floating-point constants reach
#: COLD_MIN_BYTES is timed as copies with their own constants, up to COLD_MAX_COPIES and
#: until the copies hold COLD_BYTES (twice a core's L2 here; most server cores have 1-2 MiB).
COLD_MIN_BYTES = 256 * 1024
COLD_BYTES = 4 * 1024 * 1024
COLD_MAX_COPIES = 16


class Untimeable(GraphoptError):
    """A node that cannot be timed on its own (control flow, sequences, unknown ranks ...)."""


@dataclass(frozen=True)
class Signature:
    """What an isolated timing of a node depends on, apart from the device.

    ``text`` is canonical JSON (the cache key is its digest); ``description`` a short line for
    reports; ``symbols`` the symbolic dimensions that were bound (to 1 unless a binding said
    otherwise).
    """

    text: str
    description: str
    symbols: frozenset[str]

    def key(self, device: Mapping[str, object]) -> str:
        """The cache key of this signature on ``device`` (:meth:`DeviceSpec.key`)."""
        material = json.dumps([SIGNATURE_VERSION, dict(device), self.text], sort_keys=True)
        return hashlib.blake2b(material.encode(), digest_size=20).hexdigest()


@dataclass(frozen=True)
class Isolated:
    """A one-node model and the inputs to run it with."""

    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]


def _opset(opsets: Mapping[str, int], domain: str) -> int | None:
    if domain in ("", "ai.onnx"):
        return opsets.get("", opsets.get("ai.onnx"))
    return opsets.get(domain)


def _concrete(
    value: Value, bindings: Mapping[str, int], default_dim: int, symbols: set[str]
) -> tuple[DType, tuple[int, ...]]:
    t = value.type
    if not isinstance(t, TensorType):
        raise Untimeable("a non-tensor (sequence, map or optional) operand or result")
    if t.shape is None:
        raise Untimeable("an operand or result of unknown rank")
    if t.dtype in (DType.UNDEFINED, DType.STRING):
        raise Untimeable(f"an operand or result of type {t.dtype.name.lower()}")
    dims = []
    for d in t.shape:
        if isinstance(d, int):
            dims.append(d)
        else:
            symbols.add(d if isinstance(d, str) else "?")
            dims.append(int(bindings.get(d, default_dim)) if isinstance(d, str) else default_dim)
    return t.dtype, tuple(dims)


def _keeps_values(data) -> bool:
    return not data.dtype.is_float or data.size <= SMALL_CONSTANT


def _operand_kind(value: Value, dtype: DType) -> str:
    """How an operand is given to an isolated node: "c" a constant with its values, "r" a
    constant of random data of its shape, "x" a run-time input."""
    data = value.constant
    if data is not None:
        return "c" if _keeps_values(data) else "r"
    if dtype.is_float and computed_from_constants(value):
        return "r"
    return "x"


def _attr_text(attr: Attr) -> object:
    if attr.kind in ("graph", "graphs"):
        raise Untimeable("a control-flow body")
    if attr.kind == "tensor":
        return ["tensor", int(attr.value.dtype), list(attr.value.shape), attr.value.digest.hex()]
    if attr.kind == "tensors":
        return ["tensors", [t.digest.hex() for t in attr.value]]
    if isinstance(attr.value, bytes):
        return [attr.kind, attr.value.hex()]
    if isinstance(attr.value, tuple):
        return [attr.kind, [v.hex() if isinstance(v, bytes) else v for v in attr.value]]
    return [attr.kind, attr.value]


def _outputs_kept(node: Node, opset: int | None) -> list[int]:
    """Indices of the outputs the isolated model computes: all but the optional ones, whose
    presence may add work the node does not do where nobody reads them (Dropout's mask,
    LayerNormalization's statistics)."""
    schema = schema_of(node.domain, node.op, opset)
    if schema is None:
        return list(range(len(node.outputs)))
    optional = onnx.defs.OpSchema.FormalParameterOption.Optional
    kept = []
    for i in range(len(node.outputs)):
        # Past the last formal output the last one (variadic) repeats.
        formal = schema.outputs[min(i, len(schema.outputs) - 1)] if schema.outputs else None
        if formal is None or formal.option != optional:
            kept.append(i)
    return kept or [0]


def signature(
    node: Node,
    opsets: Mapping[str, int],
    *,
    bindings: Mapping[str, int] | None = None,
    default_dim: int = 1,
) -> Signature:
    """The timing signature of ``node`` (raises :class:`Untimeable` for nodes that cannot run
    alone). Cheap: no model is built and large weights are never read."""
    if node.is_source:
        raise Untimeable("a graph input or constant")
    if node.op in CONTROL_FLOW_OPS or node.captures:
        raise Untimeable(f"{node.op} has a control-flow body")
    bindings = bindings or {}
    symbols: set[str] = set()
    opset = _opset(opsets, node.domain)
    inputs: list[object] = []
    for v in node.inputs:
        if v is None:
            inputs.append(None)
            continue
        dtype, shape = _concrete(v, bindings, default_dim, symbols)
        kind = _operand_kind(v, dtype)
        if kind == "c":
            inputs.append(["c", int(dtype), list(shape), v.constant.digest.hex()])
        else:
            inputs.append([kind, int(dtype), list(shape)])
    kept = _outputs_kept(node, opset)
    outputs = []
    for i in kept:
        dtype, shape = _concrete(node.outputs[i], bindings, default_dim, symbols)
        outputs.append([i, int(dtype), list(shape)])
    attrs = [[name, _attr_text(attr)] for name, attr in node.attrs]
    text = json.dumps(
        [node.op, node.domain, opset, attrs, inputs, outputs], sort_keys=True, default=str
    )
    shapes = " ".join(
        "-" if i is None else ("" if i[0] == "x" else "const ") + _type_text(i[1], i[2])
        for i in inputs
    )
    description = f"{node.domain + '::' if node.domain else ''}{node.op}({shapes})"
    return Signature(text, description, frozenset(symbols))


def _type_text(dtype: int, shape: list[int]) -> str:
    return f"{DType(dtype).name.lower()}[{','.join(map(str, shape))}]"


def _random(rng: np.random.Generator, dtype: DType, shape: tuple[int, ...]) -> np.ndarray:
    np_type = dtype.to_numpy()
    if dtype.is_float:
        # Positive and away from zero: no NaN from Log/Sqrt/Pow, no denormals.
        return rng.uniform(0.5, 1.5, size=shape).astype(np_type)
    if dtype == DType.BOOL:
        return rng.random(shape) < 0.5
    if dtype.is_integer:
        return rng.integers(0, 4, size=shape).astype(np_type)
    raise Untimeable(f"an operand of type {dtype.name.lower()}")


def _runtime_integers(
    node: Node, index: int, shape: tuple[int, ...], out_shapes: list[tuple[int, ...]]
) -> np.ndarray | None:
    """Values of a run-time integer operand that keep the kernel valid, where the node's
    output type determines them; None when it does not."""
    out = out_shapes[0] if out_shapes else None
    if out is None:
        return None
    shape_operand = (node.op, index) in (("Reshape", 1), ("Expand", 1), ("ConstantOfShape", 0))
    if shape_operand and shape == (len(out),):
        return np.array(out, dtype=np.int64)
    if (node.op, index) == ("Tile", 1) and node.inputs[0] is not None:
        src = node.inputs[0].type
        if isinstance(src, TensorType) and src.shape and len(src.shape) == len(out):
            reps = [o // s if isinstance(s, int) and s else 1 for o, s in zip(out, src.shape)]
            return np.array(reps, dtype=np.int64)
    return None


def build(
    node: Node,
    opsets: Mapping[str, int],
    *,
    bindings: Mapping[str, int] | None = None,
    default_dim: int = 1,
    ir_version: int | None = None,
    seed: int = 0,
) -> Isolated:
    """The one-node model of ``node`` and inputs for it (see the module docstring)."""
    return build_chain(
        [node], opsets, bindings=bindings, default_dim=default_dim, ir_version=ir_version,
        seed=seed,
    )  # fmt: skip


def build_chain(
    nodes: Sequence[Node],
    opsets: Mapping[str, int],
    *,
    bindings: Mapping[str, int] | None = None,
    default_dim: int = 1,
    ir_version: int | None = None,
    seed: int = 0,
) -> Isolated:
    """The model of ``nodes`` (topological order; each reads the ones before it or values
    from outside) computing the last node's outputs, and inputs for it. Outside operands are
    made as for one node (see the module docstring)."""
    bindings = bindings or {}
    symbols: set[str] = set()
    rng = np.random.default_rng(seed)
    names: dict[Value, str] = {}
    graph_inputs, initializers, feeds, protos = [], [], {}, []
    last = nodes[-1]
    kept = _outputs_kept(last, _opset(opsets, last.domain))
    for position, node in enumerate(nodes):
        is_last = position == len(nodes) - 1
        out_shapes = [
            _concrete(v, bindings, default_dim, symbols)[1]
            for i, v in enumerate(node.outputs)
            if not is_last or i in kept
        ]
        input_names = []
        for index, value in enumerate(node.inputs):
            if value is None:
                input_names.append("")
                continue
            if value not in names:
                name = names[value] = f"in{len(names)}"
                dtype, shape = _concrete(value, bindings, default_dim, symbols)
                kind = _operand_kind(value, dtype)
                if kind != "x":
                    array = value.constant.numpy() if kind == "c" else _random(rng, dtype, shape)
                    initializers.append(numpy_helper.from_array(np.asarray(array), name))
                else:
                    array = None
                    if dtype.is_integer:
                        array = _runtime_integers(node, index, shape, out_shapes)
                    feeds[name] = (
                        _random(rng, dtype, shape) if array is None
                        else array.astype(dtype.to_numpy())
                    )  # fmt: skip
                    graph_inputs.append(
                        helper.make_tensor_value_info(name, int(dtype), list(shape))
                    )
            input_names.append(names[value])
        if is_last:
            output_names = [f"out{i}" if i in kept else "" for i in range(len(node.outputs))]
        else:
            output_names = []
            for v in node.outputs:
                names[v] = f"t{position}_{v.index}"
                output_names.append(names[v])
        while output_names and not output_names[-1]:
            output_names.pop()
        proto = helper.make_node(node.op, input_names, output_names, domain=node.domain or None)
        proto.attribute.extend(attr_to_proto(k, a) for k, a in node.attrs)
        protos.append(proto)
    graph_outputs = []
    for i in kept:
        dtype, shape = _concrete(last.outputs[i], bindings, default_dim, symbols)
        graph_outputs.append(helper.make_tensor_value_info(f"out{i}", int(dtype), list(shape)))
    graph = helper.make_graph(
        protos, "isolated", graph_inputs, graph_outputs, initializer=initializers
    )
    imports = {"": _opset(opsets, "") or DEFAULT_OPSETS[0][1]}
    for node in nodes:
        if node.domain not in ("", "ai.onnx"):
            imports[node.domain] = _opset(opsets, node.domain) or 1
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid(d, v) for d, v in imports.items()]
    )
    model.ir_version = ir_version or _ir_version(imports[""])
    return Isolated(model, feeds)


@functools.cache
def _ir_version(opset: int) -> int:
    try:
        return helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
    except Exception:  # noqa: BLE001 - an opset newer than this onnx knows
        return onnx.IR_VERSION


def _bound_call(session, feeds: Mapping[str, np.ndarray], device: DeviceSpec) -> Callable:
    """A zero-argument callable that runs ``session`` once through an IOBinding."""
    import onnxruntime as ort

    binding = session.io_binding()
    where = "cuda" if device.device == "cuda" else "cpu"
    for name, array in feeds.items():
        binding.bind_ortvalue_input(
            name, ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), where, 0)
        )
    for out in session.get_outputs():
        binding.bind_output(out.name, where)
    session.run_with_iobinding(binding)
    # Reuse the buffers of the first run: no allocation inside the timed loop.
    for out, value in zip(session.get_outputs(), binding.get_outputs()):
        binding.bind_ortvalue_output(out.name, value)

    def call() -> None:
        session.run_with_iobinding(binding)

    return call


class LoadProbe:
    """Tells whether the machine runs as fast now as it did at its quietest in this process.

    On a shared machine other processes come in bursts of tens of milliseconds: a node timed
    inside one comes out up to 3x slower (a parallel kernel waits for a thread that is not
    running), and the minimum over its few milliseconds of samples cannot see it (graphopt's
    cost ranking found such timings: a MobileNetV2 1x1 conv cached at 24 us that takes 7).
    A probe sample times a small multithreaded Conv; the machine is *quiet* while that stays
    within :data:`QUIET_FACTOR` of the fastest probe sample seen so far.
    """

    def __init__(self, call: Callable[[], object], calls: int) -> None:
        self._call = call
        self._calls = max(calls, 1)
        self.best = math.inf

    def quiet(self, clock: Callable[[], float] = time.perf_counter) -> bool:
        """Take one probe sample; True when it is within QUIET_FACTOR of the best one."""
        start = clock()
        for _ in range(self._calls):
            self._call()
        seconds = (clock() - start) / self._calls
        self.best = min(self.best, seconds)
        return seconds <= QUIET_FACTOR * self.best


_PROBES: dict[tuple, LoadProbe | None] = {}


def load_probe(device: DeviceSpec) -> LoadProbe | None:
    """The :class:`LoadProbe` of ``device`` (one per process and device setting; None on
    a GPU, whose kernels other processes on the CPU do not slow the same way, or when the
    probe cannot be built)."""
    key = tuple(sorted(device.key().items(), key=lambda kv: kv[0]))
    if key not in _PROBES:
        probe = None
        if device.device == "cpu":
            try:
                isolated = _probe_model()
                session = make_session(
                    isolated.model, device="cpu", options=device.session_options()
                )
                call = _bound_call(session, isolated.feeds, device)
                probe = LoadProbe(call, calls_per_sample(call, PROBE_SECONDS, WARMUP))
            except Exception:  # noqa: BLE001 - no probe: every sample counts, as before
                probe = None
        _PROBES[key] = probe
    return _PROBES[key]


def _probe_model() -> Isolated:
    """A 3x3 Conv of 32 channels on 16x16 (tens of microseconds, split across threads)."""
    rng = np.random.default_rng(0)
    weight = rng.uniform(-1, 1, (32, 32, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "probe",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 32, 16, 16])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 32, 16, 16])],
        initializer=[numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return Isolated(model, {"x": rng.uniform(0.5, 1.5, (1, 32, 16, 16)).astype(np.float32)})


def _best_seconds(
    call: Callable[[], object],
    sample_seconds: float,
    samples: int,
    warmup: int,
    probe: LoadProbe | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """The fastest of ``samples`` samples (each at least ``sample_seconds``), per call.

    The minimum, not the median: on a shared machine other processes only ever add time, and
    contention lasts longer than a node's few samples, so a median moves with the load (here
    2x between runs) while the minimum stays within a few percent.

    With a ``probe``, each sample is preceded by a probe sample (:class:`LoadProbe`), and
    sampling goes on until ``samples`` of them were taken while the machine was quiet, or
    :data:`QUIET_BUDGET_SECONDS` have passed: a burst of other work that covers the usual
    budget no longer sets the timing.
    """
    calls = calls_per_sample(call, sample_seconds, warmup)
    best = math.inf
    taken = quiet = 0
    spent = 0.0
    wanted = max(samples, 1)

    def more() -> bool:
        # At least ``samples`` samples, and more (up to 4x) until BUDGET_SECONDS have passed:
        # short ops get many chances to catch the machine idle.
        if taken < wanted or (spent < BUDGET_SECONDS and taken < 4 * wanted):
            return True
        return probe is not None and quiet < wanted and spent < QUIET_BUDGET_SECONDS

    while more():
        quiet += probe.quiet(clock) if probe is not None else 1
        start = clock()
        for _ in range(calls):
            call()
        elapsed = clock() - start
        best = min(best, elapsed / calls)
        taken, spent = taken + 1, spent + elapsed
    return best


def raw_seconds(
    isolated: Isolated,
    device: DeviceSpec,
    *,
    sample_seconds: float = SAMPLE_SECONDS,
    samples: int = SAMPLES,
    warmup: int = WARMUP,
    probe: LoadProbe | None = None,
) -> float:
    """Seconds per ``run`` call of an isolated model on ``device``, the best of ``samples``
    samples (fixed overhead included; with a ``probe``, until enough were quiet). Raises
    :class:`Untimeable` when onnxruntime cannot load or run it."""
    try:
        session = make_session(
            isolated.model, device=device.device, options=device.session_options()
        )
        call = _bound_call(session, isolated.feeds, device)
        return _best_seconds(call, sample_seconds, samples, warmup, probe)
    except Untimeable:
        raise
    except Exception as exc:  # noqa: BLE001 - any refusal of onnxruntime means "cannot time"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise Untimeable(f"onnxruntime cannot run it alone: {first[:200]}") from exc


def _relu_chain(length: int) -> Isolated:
    nodes = [
        helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}" if i + 1 < length else "y"])
        for i in range(length)
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("t0", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return Isolated(model, {"t0": np.ones(1, dtype=np.float32)})


_OVERHEADS: dict[tuple, tuple[float, float]] = {}
_CHAIN = 33


def run_overhead(device: DeviceSpec) -> tuple[float, float]:
    """``(per_run, per_kernel)`` seconds on ``device``, measured once per process.

    Timing chains of 1 and :data:`_CHAIN` Relu kernels on a single element separates the
    fixed cost of a ``run`` call (paid once per isolated timing, never by a node inside a
    model) from the cost of one more kernel in a model (which every node pays).
    """
    key = tuple(sorted(device.key().items(), key=lambda kv: kv[0]))
    if key not in _OVERHEADS:
        spec = device.with_opt_level("disable")  # keep the chain as it is
        one = raw_seconds(_relu_chain(1), spec, samples=7)
        many = raw_seconds(_relu_chain(_CHAIN), spec, samples=7)
        per_kernel = max((many - one) / (_CHAIN - 1), 0.0)
        _OVERHEADS[key] = (max(one - per_kernel, 0.0), per_kernel)
    return _OVERHEADS[key]


#: Domain of onnxruntime's internal NCHWc ops (CPU layout pass at ORT_ENABLE_ALL).
NCHWC_DOMAIN = "com.microsoft.nchwc"
#: Ops that onnxruntime's CPU layout pass may run on blocked (NCHWc) tensors.
LAYOUT_OPS = frozenset(
    {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Upsample", "Resize"}
)


def optimized_model(model: onnx.ModelProto, device: DeviceSpec) -> onnx.ModelProto:
    """``model`` as onnxruntime rewrites it for ``device`` at the device's optimization level
    (fusions, layout), read back from the file onnxruntime writes it to."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="graphopt-optimized-") as folder:
        path = os.path.join(folder, "optimized.onnx")
        options = device.session_options().to_ort()
        options.optimized_model_filepath = path
        ort.InferenceSession(model.SerializeToString(), options, providers=device.providers())
        return onnx.load(path)


def runs_as_one_kernel(isolated: Isolated, device: DeviceSpec) -> bool:
    """Whether onnxruntime fuses the nodes of ``isolated`` into a single kernel (its NCHWc
    reorders aside, and the Reshapes it puts around a Gemm made of a MatMul of rank > 2 and
    its bias, which change no data): then inside a model the later nodes of the chain cost
    nothing extra."""
    if device.opt_level == "disable":
        return False
    optimized = optimized_model(isolated.model, device)
    compute = [
        n for n in optimized.graph.node
        if not (n.domain == NCHWC_DOMAIN and n.op_type in ("ReorderInput", "ReorderOutput"))
        and not (n.domain in ("", "ai.onnx") and n.op_type == "Reshape")
    ]  # fmt: skip
    return len(compute) == 1


def nchwc_core(isolated: Isolated, device: DeviceSpec) -> Isolated | None:
    """The one-node model as onnxruntime runs it inside a CNN: its NCHWc kernel alone, or None
    when the layout pass leaves the node as it is (or anything about it is unexpected).

    At ORT_ENABLE_ALL the CPU layout pass turns a lone Conv (or pool) into ``ReorderInput ->
    nchwc Conv -> ReorderOutput``. Inside a model the reorders happen once per chain of such
    ops, not once per node, so timing them with every node charges each Conv twice the cost
    of copying its activations (for a MobileNetV2 depthwise 5x5 conv, more than the kernel
    itself). This builds onnxruntime's optimized model, drops the reorders (the kernel reads
    and writes blocked tensors directly, as in a model), and feeds it blocked inputs that
    onnxruntime's own ReorderInput produced. The result runs at ORT_DISABLE_ALL so that it is
    timed as built.
    """
    if device.device != "cpu" or device.opt_level != "all":
        return None
    optimized = optimized_model(isolated.model, device)
    graph = optimized.graph
    nodes = list(graph.node)
    kinds = [(n.domain, n.op_type) for n in nodes]
    reorders_in = [n for n, k in zip(nodes, kinds) if k == (NCHWC_DOMAIN, "ReorderInput")]
    reorders_out = [n for n, k in zip(nodes, kinds) if k == (NCHWC_DOMAIN, "ReorderOutput")]
    kept = [
        n for n, k in zip(nodes, kinds)
        if k not in ((NCHWC_DOMAIN, "ReorderInput"), (NCHWC_DOMAIN, "ReorderOutput"))
    ]  # fmt: skip
    if not reorders_in and not reorders_out:
        return None
    input_names = {i.name for i in graph.input}
    output_names = {o.name for o in graph.output}
    if any(n.input[0] not in input_names for n in reorders_in) or any(
        n.output[0] not in output_names for n in reorders_out
    ):
        return None  # reorders inside the graph: not the lone-node pattern this handles
    feeds = dict(isolated.feeds)
    if reorders_in:  # blocked inputs, made by onnxruntime's own reorder kernels
        probe = helper.make_graph(
            list(reorders_in), "reorder",
            [i for i in graph.input if i.name in {n.input[0] for n in reorders_in}],
            [helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, None)
             for n in reorders_in],
        )  # fmt: skip
        probe_model = helper.make_model(probe, opset_imports=optimized.opset_import)
        probe_model.ir_version = optimized.ir_version
        session = make_session(
            probe_model, device="cpu", options=device.with_opt_level("disable").session_options()
        )
        blocked = session.run(None, {n.input[0]: feeds[n.input[0]] for n in reorders_in})
        for n, value in zip(reorders_in, blocked):
            feeds.pop(n.input[0], None)
            feeds[n.output[0]] = value
    core_inputs = [
        i
        for i in graph.input
        if i.name not in {n.input[0] for n in reorders_in} and i.name in feeds
    ]
    core_inputs += [helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT,
                                                  list(feeds[n.output[0]].shape))
                    for n in reorders_in]  # fmt: skip
    core_outputs = [o for o in graph.output if o.name not in {n.output[0] for n in reorders_out}]
    core_outputs += [helper.make_tensor_value_info(n.input[0], onnx.TensorProto.FLOAT, None)
                     for n in reorders_out]  # fmt: skip
    core = helper.make_graph(
        kept, "nchwc", core_inputs, core_outputs,
        initializer=list(graph.initializer),
    )  # fmt: skip
    model = helper.make_model(core, opset_imports=optimized.opset_import)
    model.ir_version = optimized.ir_version
    return Isolated(model, {i.name: feeds[i.name] for i in core_inputs})


def _float_bytes(tensor: onnx.TensorProto) -> int | None:
    """Bytes of a floating-point initializer (None for other types)."""
    dtype = helper.tensor_dtype_to_np_dtype(tensor.data_type)
    if dtype.kind != "f":
        return None
    return math.prod(tensor.dims) * dtype.itemsize


def cold_copies(isolated: Isolated) -> int:
    """How many copies of a one-node model to time together (see :func:`replicate`): 1 unless
    its floating-point constants reach :data:`COLD_MIN_BYTES`; then enough to hold
    :data:`COLD_BYTES` (at most :data:`COLD_MAX_COPIES`)."""
    graph = isolated.model.graph
    if len(graph.node) != 1:
        return 1
    weights = sum(b for t in graph.initializer if (b := _float_bytes(t)) is not None)
    if weights < COLD_MIN_BYTES:
        return 1
    return max(1, min(COLD_MAX_COPIES, math.ceil(COLD_BYTES / weights)))


def replicate(isolated: Isolated, copies: int, seed: int = 0) -> Isolated:
    """``copies`` copies of a one-node model that share its run-time inputs and small
    constants and each have their own large floating-point constants (random permutations of
    the first copy's: same work, other memory).

    Inside a model a kernel's weights were last read one whole run ago, with every other
    kernel's weights in between: where the model's weights exceed the cache, they come from
    memory. A node timed alone reads the same weights call after call, from cache: graphopt's
    cost ranking found a MobileNetV2 1x1 conv on 2x2 pixels with 240 -> 40 channels that
    enlarged to 3x3 costs 10 us more in the model but 4 us more alone. Running the copies in
    turn evicts each copy's weights before it runs again."""
    graph = isolated.model.graph
    if copies <= 1 or len(graph.node) != 1:
        return isolated
    (node,) = graph.node
    rng = np.random.default_rng(seed + 1)
    large = {
        t.name: t for t in graph.initializer
        if _float_bytes(t) is not None and math.prod(t.dims) > SMALL_CONSTANT
    }  # fmt: skip
    initializers = list(graph.initializer)
    nodes, outputs = [node], list(graph.output)
    output_types = {o.name: o for o in graph.output}
    for i in range(1, copies):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = f"copy{i}"
        for k, name in enumerate(node.input):
            if name in large:
                array = numpy_helper.to_array(large[name])
                permuted = rng.permutation(array.reshape(-1)).reshape(array.shape)
                copy.input[k] = f"{name}_copy{i}"
                initializers.append(numpy_helper.from_array(permuted, copy.input[k]))
        for k, name in enumerate(node.output):
            if name:
                copy.output[k] = f"{name}_copy{i}"
                if name in output_types:
                    value = onnx.ValueInfoProto()
                    value.CopyFrom(output_types[name])
                    value.name = copy.output[k]
                    outputs.append(value)
        nodes.append(copy)
    model = onnx.ModelProto()
    model.CopyFrom(isolated.model)
    del model.graph.node[:], model.graph.initializer[:], model.graph.output[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(initializers)
    model.graph.output.extend(outputs)
    return Isolated(model, dict(isolated.feeds))


def time_model(
    isolated: Isolated,
    device: DeviceSpec,
    *,
    sample_seconds: float = SAMPLE_SECONDS,
    samples: int = SAMPLES,
    warmup: int = WARMUP,
) -> tuple[float, float]:
    """``(seconds, raw)``: the node's time inside a model (the best per-call time, sampled
    until the machine was seen quiet, :class:`LoadProbe`, less the fixed cost of a run call,
    at least one kernel's overhead) and the raw per-call time of the model timed.

    A node with large constants is timed as :func:`cold_copies` copies (:func:`replicate`),
    its time being the copies' share. Conv and pooling nodes on the CPU at ORT_ENABLE_ALL are
    timed as their NCHWc kernel alone (:func:`nchwc_core`) when onnxruntime's layout pass
    converts them."""
    kw = {"sample_seconds": sample_seconds, "samples": samples, "warmup": warmup,
          "probe": load_probe(device)}  # fmt: skip
    copies = cold_copies(isolated)
    isolated = replicate(isolated, copies)
    ops = {n.op_type for n in isolated.model.graph.node}
    op = ops.pop() if len(ops) == 1 else None
    core = None
    if op in LAYOUT_OPS:
        try:
            core = nchwc_core(isolated, device)
        except Exception:  # noqa: BLE001 - internal ops changed: time the node as it is
            core = None
    if core is not None:
        try:
            raw = raw_seconds(core, device.with_opt_level("disable"), **kw)
        except Untimeable:
            core = None
    if core is None:
        raw = raw_seconds(isolated, device, **kw)
    per_run, per_kernel = run_overhead(device)
    return max((raw - per_run) / copies, per_kernel), raw
