"""The rule verifier: bounded proofs in z3, all-shape proofs from axioms, numeric checks.

See docs/verification.md. Entry points: :func:`verify_rule` for one rule,
:func:`verify_rules` for many (cached, optionally parallel).
"""

from optimizer.verify.verifier import VERIFIER_VERSION, RuleResult, verify_rule

__all__ = ["VERIFIER_VERSION", "RuleResult", "verify_rule"]
