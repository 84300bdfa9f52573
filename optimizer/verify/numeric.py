"""Numeric checks on onnxruntime: both sides of an instance on random (or given) inputs.

The proofs are over real numbers; this check runs the real kernels in float32,
so it also catches a semantics mistake in the prover and shows the rounding a
rewrite costs. Tolerances: ``rtol`` relative, ``atol`` scaled by the largest
magnitude among the outputs (a sum of many terms rounds in absolute terms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from optimizer.ir import Graph, TensorData, TensorType, constant
from optimizer.rewrite.rule import Rule
from optimizer.verify.instances import Instance, analyse, build_sides

RTOL = 1e-4
ATOL = 1e-5


def _session_options():
    from optimizer.runtime import SessionOptionsSpec

    # ORT optimizations off (the check must run the graph as written), one thread (the models
    # are tiny, and the library runs one worker per core), and quiet: a sampled instance that
    # onnxruntime refuses (dilated SAME convolutions, opset 6) is expected, not news.
    return SessionOptionsSpec(opt_level="disable", intra_op_threads=1, log_severity=4)


@dataclass
class NumericResult:
    """``ok``; on failure the feed and both sides' outputs, and a one-line reason."""

    ok: bool
    reason: str = ""
    feed: dict[str, np.ndarray] | None = None
    lhs: list[np.ndarray] | None = None
    rhs: list[np.ndarray] | None = None
    #: onnxruntime could not run the instance (an opset or op it lacks); not a verdict
    unavailable: bool = False
    #: what ran both sides: "onnxruntime" or "float64" (the semantics)
    engine: str = ""


_OPTIONS = None


def random_feed(inst: Instance, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random values for the instance's graph inputs: standard normal floats, integers in
    [-3, 3] (unsigned: [0, 3]), random booleans."""
    feed = {}
    for v in inst.inputs:
        t = v.type
        assert isinstance(t, TensorType)
        shape = tuple(t.shape)
        dt = t.dtype.to_numpy()
        if t.dtype.is_float:
            feed[v.input_name] = rng.standard_normal(shape).astype(dt)
        elif dt == np.bool_:
            feed[v.input_name] = rng.random(shape) < 0.5
        else:
            low = 0 if np.dtype(dt).kind == "u" else -3
            feed[v.input_name] = rng.integers(low, 4, size=shape).astype(dt)
    return feed


def session_for(graph: Graph | onnx.ModelProto):
    """An onnxruntime session (optimizations off) for one side."""
    global _OPTIONS
    from optimizer import runtime
    from optimizer.onnx_io import to_proto

    if _OPTIONS is None:
        _OPTIONS = _session_options()
    proto = graph if isinstance(graph, onnx.ModelProto) else to_proto(graph)
    return runtime.make_session(proto, device="cpu", options=_OPTIONS)


def run_session(session, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    from optimizer import runtime

    names = {i.name for i in session.get_inputs()}
    outs = runtime.run(session, {k: v for k, v in feed.items() if k in names})
    return [outs[o.name] for o in session.get_outputs()]


def run_side(graph: Graph, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run one side on onnxruntime (optimizations off)."""
    return run_session(session_for(graph), feed)


def compare(
    lhs: list[np.ndarray], rhs: list[np.ndarray], names, rtol=RTOL, atol=ATOL
) -> str | None:
    """None when every output agrees within tolerance, else the first difference."""
    from optimizer.runtime import compare_outputs

    for name, a, b in zip(names, lhs, rhs, strict=False):
        a, b = np.asarray(a), np.asarray(b)
        scale = 1.0
        if a.dtype.kind == "f" and a.size and b.shape == a.shape:
            finite = np.concatenate([np.abs(a[np.isfinite(a)]), np.abs(b[np.isfinite(b)])])
            scale = max(1.0, float(finite.max())) if finite.size else 1.0
        result = compare_outputs(name, a, b, rtol=rtol, atol=atol * scale)
        if not result.ok:
            return result.reason
    return None


def check_instance(rule: Rule, inst: Instance, *, seed: int = 0, samples: int = 1) -> NumericResult:
    """Run both sides of ``inst`` on ``samples`` random feeds and compare (outputs' shapes too).

    onnxruntime runs both sides; where it cannot run the match side (an op or opset it lacks),
    the float64 semantics run both. When onnxruntime runs the match side but not the rewrite,
    the rule is wrong for this instance: the rewritten model would not run."""
    from optimizer.errors import CheckUnavailableError

    rng = np.random.default_rng(seed)
    feeds = [random_feed(inst, rng) for _ in range(samples)]
    try:
        session = session_for(inst.proto("lhs", rule))
        expected = [run_session(session, feed) for feed in feeds]
    except CheckUnavailableError as exc:
        return _float_check(rule, inst, feeds, _first(exc))
    feed, lhs = feeds[0], expected[0]
    try:
        session = session_for(inst.proto("rhs", rule))
        for feed, lhs in zip(feeds, expected, strict=True):  # noqa: B007 - used on failure
            rhs = run_session(session, feed)
            why = compare(lhs, rhs, rule.outputs)
            if why:
                return NumericResult(False, why, feed, lhs, rhs, engine="onnxruntime")
    except CheckUnavailableError as exc:
        return NumericResult(
            False,
            f"onnxruntime runs the match side but not the rewrite: {_first(exc)}",
            feed,
            lhs,
            None,
            engine="onnxruntime",
        )
    return NumericResult(True, engine="onnxruntime")


def _first(exc: Exception) -> str:
    return str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__


def _float_check(rule: Rule, inst: Instance, feeds, why: str) -> NumericResult:
    """Both sides on the float64 semantics (onnxruntime cannot run the match side)."""
    from optimizer.verify.arith import Unencodable

    for feed in feeds:
        try:
            lhs = float_side(inst.lhs, inst, feed)
        except (Unencodable, ValueError, IndexError, TypeError, KeyError) as exc:
            return NumericResult(True, f"{why}; float64: {_first(exc)}", unavailable=True)
        try:
            rhs = float_side(inst.rhs, inst, feed)
        except Unencodable as exc:
            return NumericResult(True, f"{why}; float64: {_first(exc)}", unavailable=True)
        except (ValueError, IndexError, TypeError, KeyError) as exc:
            reason = f"the rewrite cannot be evaluated where the match can: {_first(exc)}"
            return NumericResult(False, reason, feed, lhs, None, engine="float64")
        reason = compare(lhs, rhs, rule.outputs)
        if reason:
            return NumericResult(False, reason, feed, lhs, rhs, engine="float64")
    return NumericResult(True, engine="float64")


def rebuild(rule: Rule, inst: Instance, values: dict[str, np.ndarray]) -> Instance:
    """The instance with its symbolic constants replaced by ``values`` (a counterexample's)."""
    tensors = dict(inst.tensors)
    for name in inst.symbolic:
        if name in values:
            t = tensors[name].type
            tensors[name] = constant(
                TensorData.from_array(values[name].astype(t.dtype.to_numpy()), t.dtype)
            )
    lhs, rhs = build_sides(analyse(rule), tensors, inst.attrs, inst.opset)
    return Instance(tensors, inst.attrs, inst.symbolic, lhs, rhs, inst.opset, inst.literal_vars)


def run_on(rule: Rule, inst: Instance, values: dict[str, np.ndarray]) -> NumericResult:
    """Both sides on the given variable values (graph inputs and symbolic constants)."""
    from optimizer.errors import CheckUnavailableError

    concrete = rebuild(rule, inst, values) if inst.symbolic else inst
    feed = {
        v.input_name: values[v.input_name].astype(v.type.dtype.to_numpy()) for v in concrete.inputs
    }
    try:
        lhs = run_side(concrete.graph("lhs", rule), feed)
        rhs = run_side(concrete.graph("rhs", rule), feed)
    except CheckUnavailableError:  # onnxruntime lacks the op or opset: the float semantics instead
        lhs, rhs = float_run(concrete, feed)
    why = compare(lhs, rhs, rule.outputs)
    return NumericResult(why is None, why or "", {**values}, lhs, rhs)


def float_side(values, inst: Instance, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """One side evaluated with the float64 semantics."""
    from optimizer.verify.arith import FloatArith
    from optimizer.verify.semantics import evaluate

    env = {v: np.asarray(feed[v.input_name].astype(np.float64), dtype=object) for v in inst.inputs}
    arrays = evaluate(values, env, FloatArith())
    return [np.asarray(a.tolist(), dtype=np.float64) for a in arrays]


def float_run(inst: Instance, feed: dict[str, np.ndarray]) -> tuple[list, list]:
    """Both sides evaluated with the float64 semantics (where onnxruntime cannot run them)."""
    return float_side(inst.lhs, inst, feed), float_side(inst.rhs, inst, feed)
