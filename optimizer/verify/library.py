"""Verifying many rules: cache look-ups, then a process pool for the rest."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

from optimizer.rewrite.rule import Rule, parse_rules
from optimizer.verify.allshapes import AXIOM_FAMILY, default_axioms
from optimizer.verify.cache import ResultCache
from optimizer.verify.verifier import RuleResult, verify_rule


def _parse_one(source: str, family: str, path: str = "") -> Rule:
    (rule,) = parse_rules(source, family=family, path=path)
    return rule


def _verify_source(
    source: str, family: str, path: str, options: dict, axioms: list[str] | None
) -> dict:
    """Worker: re-parse one rule (and the axioms) from text (cheap, and avoids pickling ASTs)."""
    import optimizer.onnx_io  # noqa: F401 - installs ONNX shape inference in the worker

    rule = _parse_one(source, family, path)
    parsed = None if axioms is None else [_parse_one(a, AXIOM_FAMILY) for a in axioms]
    return verify_rule(rule, axioms=parsed, **options).to_json()


def _proved(axiom: Rule, cache: ResultCache | None, use_cache: bool, options: dict) -> bool:
    hit = cache.get(axiom.digest, axiom.name) if (cache is not None and use_cache) else None
    if hit is None:
        hit = verify_rule(axiom, all_shapes=False, **options)
        if cache is not None and hit.status not in ("error", "unknown"):
            cache.put(hit)
    return hit.ok


def verify_rules(
    rules: Sequence[Rule],
    *,
    jobs: int | None = None,
    use_cache: bool = True,
    cache: ResultCache | None = None,
    on_result: Callable[[RuleResult, bool], None] | None = None,
    **options,
) -> list[RuleResult]:
    """Verify ``rules`` (results in the same order). ``on_result(result, cached)`` reports progress.

    ``jobs``: worker processes (default ``os.cpu_count()``; 1 runs in this process).
    """
    import optimizer.onnx_io  # noqa: F401

    cache = cache if cache is not None else (ResultCache() if use_cache else None)
    results: dict[int, RuleResult] = {}
    todo: list[int] = []
    done: list[int] = []
    for i, rule in enumerate(rules):
        hit = cache.get(rule.digest, rule.name) if (cache is not None and use_cache) else None
        if hit is not None:
            results[i] = hit
            if on_result:
                on_result(hit, True)
        else:
            todo.append(i)
    jobs = max(1, jobs or os.cpu_count() or 1)
    # Axioms first: the all-shape layer may use only those proved in this run (or cached).
    axiom_ids = [i for i, r in enumerate(rules) if r.family == AXIOM_FAMILY]
    for i in axiom_ids:
        if i in todo:
            results[i] = verify_rule(rules[i], all_shapes=False, **options)
            todo.remove(i)
            done.append(i)
            if on_result:
                on_result(results[i], False)
    if axiom_ids:
        axiom_rules = [rules[i] for i in axiom_ids if results[i].ok]
    elif todo:  # a subset without axioms: the shipped ones, each proved (or cached as proved) here
        axiom_rules = [a for a in default_axioms() if _proved(a, cache, use_cache, options)]
    else:
        axiom_rules = []
    axiom_sources = [r.source for r in axiom_rules]
    if jobs == 1 or len(todo) <= 1:
        for i in todo:
            results[i] = verify_rule(rules[i], axioms=axiom_rules, **options)
            if on_result:
                on_result(results[i], False)
    else:
        # Slow rules first, so that the pool does not end waiting on one straggler.
        order = sorted(todo, key=lambda i: -len(rules[i].source))
        with ProcessPoolExecutor(max_workers=min(jobs, len(todo))) as pool:
            futures = {
                pool.submit(
                    _verify_source,
                    rules[i].source,
                    rules[i].family,
                    rules[i].path,
                    options,
                    axiom_sources,
                ): i
                for i in order
            }
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = RuleResult.from_json(future.result())
                except Exception as exc:  # noqa: BLE001 - a dead worker fails its rule only
                    rule = rules[i]
                    results[i] = RuleResult(
                        rule.name, rule.family, rule.digest, "error", message=str(exc)
                    )
                if on_result:
                    on_result(results[i], False)
    todo += done
    if cache is not None:
        for i in todo:
            if results[i].status not in ("error", "unknown"):  # retried next time
                cache.put(results[i])
        cache.save()
    return [results[i] for i in range(len(rules))]
