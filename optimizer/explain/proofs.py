"""How each applied rule was proved: the verifier's verdict, cached or (briefly) re-derived.

``graphopt rules verify`` caches every verdict by the rule's text digest and the verifier's
version (:mod:`optimizer.verify.cache`). A report looks the applied rules up there first;
rules the cache lacks are verified here, one after another, within a time budget (each
verdict joins the cache); rules beyond the budget, or on which z3 gave up under the report's
shorter per-query timeout, are reported as not re-proved, with the command that proves them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from optimizer.rewrite.rule import Rule, rules_dir

__all__ = ["ProofInfo", "proof_info", "describe_method"]

#: Seconds a report may spend verifying rules the cache lacks.
VERIFY_BUDGET_S = 20.0
#: z3's per-query timeout while verifying for a report (``rules verify`` uses 10 s).
VERIFY_TIMEOUT_MS = 3000

_METHODS = {
    "all-shapes": "z3 proof for all shapes (from verified operator axioms), plus bounded "
    "proofs and a numeric test",
    "bounded": "z3 proof for all values on bounded shapes, plus a numeric test on onnxruntime",
}


def describe_method(method: str, status: str) -> str:
    """A sentence for a verifier method and status."""
    if status != "proved":
        return f"not proved ({status})"
    return _METHODS.get(method, f"proved ({method})")


@dataclass
class ProofInfo:
    """One rule: its text and where it lives, and the verifier's verdict on it.

    ``origin`` says where the verdict came from: ``"cache"``, ``"verified now"`` or
    ``"not re-proved"`` (then ``status`` is ``"not re-proved"`` and ``message`` says how).
    """

    name: str
    family: str
    comment: str
    source: str
    location: str
    status: str
    method: str
    summary: str
    message: str = ""
    numeric: str = ""
    instances: list[str] = field(default_factory=list)
    seconds: float = 0.0
    origin: str = "cache"

    def to_json(self) -> dict:
        return dict(vars(self))


def _location(rule: Rule) -> str:
    if not rule.path:
        return f"line {rule.line}"
    path = rule.path
    root = str(rules_dir().parent)
    if os.path.isabs(path) and path.startswith(root + os.sep):
        path = os.path.relpath(path, root)
    return f"{path}:{rule.line}"


def _info(rule: Rule, result, origin: str) -> ProofInfo:
    return ProofInfo(
        name=rule.name, family=rule.family, comment=rule.comment, source=rule.source,
        location=_location(rule), status=result.status, method=result.method,
        summary=describe_method(result.method, result.status), message=result.message,
        numeric=result.numeric, instances=list(result.instances), seconds=result.seconds,
        origin=origin,
    )  # fmt: skip


def _not_proved_here(rule: Rule, why: str) -> ProofInfo:
    return ProofInfo(
        name=rule.name, family=rule.family, comment=rule.comment, source=rule.source,
        location=_location(rule), status="not re-proved", method="-",
        summary=f"not re-proved here; see `graphopt rules verify {rule.name}`",
        message=why, origin="not re-proved",
    )  # fmt: skip


def proof_info(
    rules: Sequence[Rule], *, budget_s: float | None = None, use_cache: bool = True
) -> dict[str, ProofInfo]:
    """Proof information for each of ``rules`` by name (see the module docstring);
    ``budget_s`` defaults to :data:`VERIFY_BUDGET_S`."""
    from optimizer.verify.cache import ResultCache
    from optimizer.verify.library import verify_rules

    cache = ResultCache() if use_cache else None
    infos: dict[str, ProofInfo] = {}
    missing: list[Rule] = []
    for rule in rules:
        hit = cache.get(rule.digest, rule.name) if cache is not None else None
        if hit is not None:
            infos[rule.name] = _info(rule, hit, "cache")
        else:
            missing.append(rule)
    deadline = time.monotonic() + (VERIFY_BUDGET_S if budget_s is None else budget_s)
    for rule in missing:
        if time.monotonic() >= deadline:
            infos[rule.name] = _not_proved_here(rule, "the report's verification time ran out")
            continue
        (result,) = verify_rules(
            [rule], jobs=1, use_cache=use_cache, cache=cache, timeout_ms=VERIFY_TIMEOUT_MS
        )
        if result.status in ("unknown", "error"):
            why = f"{result.status} within the report's budget: {result.message}"
            infos[rule.name] = _not_proved_here(rule, why)
        else:
            infos[rule.name] = _info(rule, result, "verified now")
    return {r.name: infos[r.name] for r in rules}
