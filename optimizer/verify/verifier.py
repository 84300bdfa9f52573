"""Verifying one rule: instances, numeric check (many), bounded proofs (a few), all-shape
proof, verdict."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from optimizer.rewrite.rule import Rule
from optimizer.verify.bounded import prove_instance
from optimizer.verify.instances import Instance, sample_instances
from optimizer.verify.numeric import NumericResult, check_instance, run_on

#: Bump when a change to the verifier may change verdicts: cached results of other versions are
#: ignored.
VERIFIER_VERSION = "3"
#: Seconds the numeric tier may spend on one rule (the proof instances are checked anyway).
NUMERIC_BUDGET_S = 3.0

#: Statuses: only ``proved`` ships.
PROVED, REFUTED, UNSAFE, UNKNOWN, NO_INSTANCE, ERROR = (
    "proved",
    "refuted",
    "unsafe",
    "unknown",
    "no-instance",
    "error",
)


@dataclass
class RuleResult:
    """The verdict on one rule (JSON-serialisable, cached by digest)."""

    name: str
    family: str
    digest: str
    status: str
    method: str = "-"
    seconds: float = 0.0
    message: str = ""
    instances: list[str] = field(default_factory=list)
    counterexample: str = ""
    numeric: str = "skipped"
    #: instances the numeric check ran (the bounded proofs run on ``instances``)
    numeric_instances: int = 0
    version: str = VERIFIER_VERSION

    @property
    def ok(self) -> bool:
        return self.status == PROVED

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuleResult:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def verify_rule(
    rule: Rule,
    *,
    seed: int = 0,
    timeout_ms: int = 10_000,
    numeric: bool = True,
    all_shapes: bool = True,
    instances: list[Instance] | None = None,
    axioms: Sequence[Rule] | None = None,
) -> RuleResult:
    """Check ``rule`` numerically on many sampled instances, then prove it on a few of the most
    general ones (and for all shapes where the axioms allow). A refuted rule's result carries a
    printed counterexample. ``instances``: check and prove exactly these (no sampling).
    ``axioms``: the proved axioms the all-shape layer may use (default: the shipped
    ``rules/axioms.rules``)."""
    start = time.monotonic()
    result = RuleResult(rule.name, rule.family, rule.digest, ERROR)
    try:
        _verify(rule, result, seed, timeout_ms, numeric, all_shapes, instances, axioms)
    except Exception as exc:  # noqa: BLE001 - a verifier crash must not look like a proof
        result.status = ERROR
        result.message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    result.seconds = round(time.monotonic() - start, 3)
    return result


def _verify(rule, result, seed, timeout_ms, numeric, all_shapes, given, axioms=None) -> None:
    if given is None:
        samples = sample_instances(rule, seed=seed)
        pool, found, notes = samples.pool, samples.proofs, samples.notes
    else:
        pool, found, notes = list(given), list(given), []
        for inst in given:
            mismatch = [
                f"{n}: {a.type} vs {b.type}"
                for n, a, b in zip(rule.outputs, inst.lhs, inst.rhs, strict=False)
                if a.type != b.type
            ]
            if mismatch:
                result.status = REFUTED
                result.message = "the two sides have different types: " + "; ".join(mismatch)
                result.counterexample = f"instance {inst.describe()}"
                return
    result.instances = [inst.describe() for inst in found]
    if not pool:
        result.status = NO_INSTANCE
        result.message = "no instance satisfies the where clause" + (
            f" ({'; '.join(notes)})" if notes else ""
        )
        return
    # Tier 1, cheap: every sampled instance on onnxruntime (the float64 semantics where it
    # cannot run), smallest first, so that a refusal shows the most compact counterexample.
    checked = {"onnxruntime": 0, "float64": 0}
    unavailable: list[str] = []
    if numeric:
        deadline = time.monotonic() + NUMERIC_BUDGET_S
        proof_ids = {id(inst) for inst in found}
        for k, inst in enumerate(pool):
            proof = id(inst) in proof_ids
            if time.monotonic() > deadline and not proof:
                continue
            check = check_instance(rule, inst, seed=seed + k, samples=2 if proof else 1)
            if check.unavailable:
                unavailable.append(check.reason)
                continue
            checked[check.engine] += 1
            if not check.ok:
                result.status, result.numeric = REFUTED, "failed"
                result.message = (
                    f"numeric check failed on instance {k + 1} of {len(pool)} "
                    f"({check.engine}): {check.reason}"
                )
                if inst.reshaped:
                    result.message += (
                        "; the rewrite changes the output shape (the rewriter's static type "
                        "guard cannot see this where dimensions are symbolic)"
                    )
                result.counterexample = format_counterexample(rule, inst, check)
                return
    # Tier 2, expensive: bounded proofs, for all input values, on the few proof instances.
    if not found:
        result.status = NO_INSTANCE
        result.message = (
            f"{len(pool)} instance(s) sampled, none small enough or shape-preserving for a proof"
        )
        return
    queries = 0
    invalid = []
    # Smallest first: a refuted rule then shows the most compact counterexample.
    for inst in sorted(found, key=_size):
        proof = prove_instance(inst, timeout_ms=timeout_ms)
        queries += proof.z3_queries
        if proof.status == "proved":
            continue
        if proof.status == "invalid":
            invalid.append(inst)
            continue
        if proof.status in ("counterexample", "unknown"):
            # Confirm on concrete values: the z3 model's first (its uninterpreted functions may
            # not be the real ones), then a few deterministic and random candidates.
            concrete = search_counterexample(rule, inst, proof.values, seed=seed)
            if concrete is not None:
                result.status, result.message = REFUTED, concrete.reason
                result.counterexample = format_counterexample(rule, inst, concrete)
                return
            result.status = UNKNOWN
            result.message = f"not proved ({proof.detail}); no concrete counterexample found"
            result.counterexample = f"instance: {inst.describe()}"
            return
        if proof.status == "unsafe":
            result.status, result.message = UNSAFE, f"{proof.detail}: needs a precondition"
            if proof.values:
                result.counterexample = format_counterexample(
                    rule, inst, run_on(rule, inst, proof.values)
                )
            else:
                result.counterexample = f"instance: {inst.describe()}"
            return
        result.status = ERROR
        result.message = f"{proof.detail} (instance {inst.describe()})"
        return
    found = [inst for inst in found if inst not in invalid]
    result.instances = [inst.describe() for inst in found]
    if not found:
        result.status = NO_INSTANCE
        result.message = "no valid instance (the sampled shapes do not evaluate)"
        return
    result.method = "bounded"
    ran = checked["onnxruntime"] + checked["float64"]
    result.numeric_instances = ran
    result.message = (
        f"{len(found)} proof instance(s), {queries} z3 quer{'y' if queries == 1 else 'ies'}; "
        f"numeric: {ran} of {len(pool)} instance(s)"
        + (f" ({checked['float64']} on float64)" if checked["float64"] else "")
        + (f", {len(unavailable)} unavailable" if unavailable else "")
    )
    if all_shapes:
        from optimizer.verify.allshapes import prove_all_shapes

        ok, why = prove_all_shapes(rule, found, axioms=axioms)
        if ok:
            result.method = "all-shapes"
            result.message += f"; all shapes: {why}"
    if numeric:
        result.numeric = "ok" if ran else f"unavailable: {unavailable[0]}"
    result.status = PROVED


def search_counterexample(
    rule: Rule,
    inst: Instance,
    model_values: dict[str, np.ndarray],
    *,
    seed: int = 0,
    tries: int = 8,
) -> NumericResult | None:
    """Concrete values on which the two sides differ beyond tolerance (run on onnxruntime)."""
    rng = np.random.default_rng(seed + 7)
    names = [n for n, v in inst.tensors.items() if v.node.is_input or n in inst.symbolic]
    shapes = {n: tuple(inst.tensors[n].type.shape) for n in names}
    dtypes = {n: inst.tensors[n].type.dtype.to_numpy() for n in names}

    def filled(make) -> dict[str, np.ndarray]:
        return {n: np.asarray(make(shapes[n], dtypes[n])).astype(dtypes[n]) for n in names}

    def normal(scale):
        return lambda s, d: rng.random(s) < 0.5 if d == np.bool_ else rng.standard_normal(s) * scale

    candidates = [model_values] if model_values else []
    candidates += [
        filled(normal(1.0)),
        filled(normal(3.0)),
        filled(lambda s, d: np.zeros(s)),
        filled(lambda s, d: np.ones(s)),
    ]
    for _ in range(max(0, tries - len(candidates))):
        sparse = filled(normal(2.0))
        candidates.append(
            {
                n: np.where(rng.random(v.shape) < 0.5, 0, v).astype(v.dtype)
                for n, v in sparse.items()
            }
        )
    for values in candidates:
        try:
            run = run_on(rule, inst, values)
        except Exception:  # noqa: BLE001 - a candidate that cannot run proves nothing
            continue
        if not run.ok:
            return run
    return None


def _size(inst: Instance) -> int:
    return sum(int(np.prod(v.type.shape)) for v in inst.tensors.values())


# ---------------------------------------------------------------- counterexamples


def _fmt_array(a: Any) -> str:
    arr = np.asarray(a)
    if arr.dtype.kind == "f":
        text = np.array2string(
            arr, precision=6, separator=", ", suppress_small=True, max_line_width=120, threshold=24
        )
    else:
        text = np.array2string(arr, separator=", ", max_line_width=120, threshold=24)
    return " ".join(text.split())


def format_counterexample(rule: Rule, inst: Instance, run: NumericResult) -> str:
    """Input values (graph inputs and constants) and both sides' outputs, a few lines."""
    lines = [f"instance: {inst.describe()}"]
    feed = dict(run.feed or {})
    for name, values in feed.items():
        lines.append(f"  {name} = {_fmt_array(values)}")
    for name, value in inst.tensors.items():
        if name not in feed and name not in inst.literal_vars and value.is_constant:
            lines.append(f"  {name} = {_fmt_array(value.constant.numpy())} (constant)")
    for k, name in enumerate(rule.outputs):
        if run.lhs is not None and k < len(run.lhs):
            lines.append(f"  match   {name} = {_fmt_array(run.lhs[k])}")
        if run.rhs is not None and k < len(run.rhs):
            lines.append(f"  rewrite {name} = {_fmt_array(run.rhs[k])}")
    return "\n".join(lines)
