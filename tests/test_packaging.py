"""The wheel must contain every subpackage and the rule library."""

from __future__ import annotations

from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "optimizer").rglob("__init__.py")
    }
    # The model zoo ships for `graphopt bench`.
    on_disk |= {"benchmarks", "benchmarks.models"}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages"
    assert config["tool"]["setuptools"]["package-dir"]["optimizer.rules"] == "rules"
    assert any((ROOT / "rules").glob("*.rules"))
