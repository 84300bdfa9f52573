"""``graphopt rules list`` and ``graphopt rules verify``, and the result cache."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from optimizer.cli import app

RULES = """
rule mul-distributes:  # x*z + y*z = (x+y)*z
    match: Add(Mul(x, z), Mul(y, z))
    rewrite: Mul(Add(x, y), z)

rule neg-neg-cancels:  # -(-x) = x
    match: Neg(Neg(x))
    rewrite: Identity(x)
"""
WRONG = """
rule relu-over-add:  # wrong: relu(x + y) = relu(x) + relu(y)
    match: Relu(Add(x, y))
    rewrite: Add(Relu(x), Relu(y))
"""


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHOPT_CACHE_DIR", str(tmp_path / "cache"))
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "good.rules").write_text(RULES)
    return rules


def run(*args):
    return CliRunner().invoke(app, ["rules", *map(str, args)])


def test_list_json(folder):
    result = run("list", "--json", "--rules-dir", folder)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["count"] == 2
    assert {r["name"] for r in data["rules"]} == {"mul-distributes", "neg-neg-cancels"}
    assert all(
        r["family"] == "good" and r["comment"] and r["outputs"] == ["out"] for r in data["rules"]
    )


def test_list_table(folder):
    result = run("list", "--rules-dir", folder)
    assert result.exit_code == 0 and "mul-distributes" in result.output


def test_verify_json_then_cached(folder, tmp_path):
    first = run("verify", "--json", "-j", "1", "--rules-dir", folder)
    assert first.exit_code == 0, first.output
    data = json.loads(first.output)
    assert data["ok"] and data["proved"] == 2 and data["cached"] == 0
    assert all(r["status"] == "proved" and r["numeric"] == "ok" for r in data["rules"])
    assert (tmp_path / "cache" / "verify-cache.json").is_file()
    second = json.loads(run("verify", "--json", "--rules-dir", folder).output)
    assert second["cached"] == 2 and second["proved"] == 2
    third = json.loads(run("verify", "--json", "--no-cache", "--rules-dir", folder).output)
    assert third["cached"] == 0


def test_verify_fails_with_a_counterexample(folder):
    (folder / "wrong.rules").write_text(WRONG)
    result = run("verify", "--rules-dir", folder, "-j", "2")
    assert result.exit_code == 1
    assert "relu-over-add" in result.output and "refuted" in result.output
    assert "match" in result.output and "rewrite" in result.output


def test_verify_named_rules_and_unknown_name(folder):
    result = run("verify", "neg-neg-cancels", "--json", "--rules-dir", folder)
    assert result.exit_code == 0
    assert [r["name"] for r in json.loads(result.output)["rules"]] == ["neg-neg-cancels"]
    bad = run("verify", "no-such-rule", "--rules-dir", folder)
    assert bad.exit_code == 2
    assert "unknown rule 'no-such-rule'" in bad.output


def test_syntax_error_is_one_line(folder):
    (folder / "broken.rules").write_text("rule Bad Name:\n    match: X(\n")
    result = run("verify", "--rules-dir", folder)
    assert result.exit_code == 2
    assert "rule syntax" in result.output


def test_cache_ignores_other_versions_and_damage(tmp_path, monkeypatch):
    from optimizer.verify import verifier
    from optimizer.verify.cache import ResultCache

    path = tmp_path / "c.json"
    cache = ResultCache(path)
    cache.put(verifier.RuleResult("r", "f", "abc", "proved"))
    cache.save()
    assert ResultCache(path).get("abc", "r").status == "proved"
    monkeypatch.setattr("optimizer.verify.cache.VERIFIER_VERSION", "other")
    assert ResultCache(path).get("abc", "r") is None
    path.write_text("{not json")
    assert ResultCache(path).get("abc", "r") is None
