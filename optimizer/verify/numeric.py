"""Numeric checks on onnxruntime: both sides of an instance on random (or given) inputs.

The proofs are over real numbers; this check runs the real kernels in float32,
so it also catches a semantics mistake in the prover and shows the rounding a
rewrite costs. Tolerances: ``rtol`` relative, ``atol`` scaled by the largest
magnitude among the outputs (a sum of many terms rounds in absolute terms).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.ir import Graph, TensorData, TensorType, constant
from optimizer.rewrite.rule import Rule
from optimizer.verify.instances import Instance, analyse, build_sides

RTOL = 1e-4
ATOL = 1e-5


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


def random_feed(inst: Instance, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random values for the instance's graph inputs."""
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
            feed[v.input_name] = rng.integers(0, 3, size=shape).astype(dt)
    return feed


def session_for(graph: Graph):
    """An onnxruntime session (optimizations off) for one side."""
    from optimizer import runtime
    from optimizer.onnx_io import to_proto

    return runtime.make_session(to_proto(graph), device="cpu", options=runtime.CHECK_OPTIONS)


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


def check_instance(rule: Rule, inst: Instance, *, seed: int = 0, samples: int = 2) -> NumericResult:
    """Run both sides of ``inst`` on ``samples`` random feeds and compare."""
    from optimizer.errors import CheckUnavailableError

    rng = np.random.default_rng(seed)
    try:
        sessions = session_for(inst.graph("lhs", rule)), session_for(inst.graph("rhs", rule))
    except CheckUnavailableError as exc:
        return NumericResult(True, str(exc).splitlines()[0][:160], unavailable=True)
    for _ in range(samples):
        feed = random_feed(inst, rng)
        try:
            lhs, rhs = run_session(sessions[0], feed), run_session(sessions[1], feed)
        except CheckUnavailableError as exc:
            return NumericResult(True, str(exc).splitlines()[0][:160], unavailable=True)
        why = compare(lhs, rhs, rule.outputs)
        if why:
            return NumericResult(False, why, feed, lhs, rhs)
    return NumericResult(True)


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


def float_run(inst: Instance, feed: dict[str, np.ndarray]) -> tuple[list, list]:
    """Both sides evaluated with the float64 semantics (where onnxruntime cannot run them)."""
    from optimizer.verify.arith import FloatArith
    from optimizer.verify.semantics import evaluate

    env = {v: np.asarray(feed[v.input_name].astype(np.float64), dtype=object) for v in inst.inputs}
    out = []
    for values in (inst.lhs, inst.rhs):
        arrays = evaluate(values, env, FloatArith())
        out.append([np.asarray(a.tolist(), dtype=np.float64) for a in arrays])
    return out[0], out[1]
