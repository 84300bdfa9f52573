"""Architecture promises that a refactoring could silently break."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "optimizer"
CONSUMERS = ("optimizer.cli", "optimizer.cli_rules", "optimizer.cli_bench", "optimizer.bench",
             "optimizer.torch_backend", "optimizer.label", "optimizer.explain",
             "benchmarks")  # fmt: skip
CORE = ("ir", "onnx_io", "rewrite", "verify", "cost", "search", "passes", "runtime.py", "api.py",
        "timing.py")  # fmt: skip


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _core_files() -> list[Path]:
    files: list[Path] = []
    for entry in CORE:
        target = PACKAGE / entry
        files.extend(
            sorted(target.rglob("*.py")) if target.is_dir() else [target] if target.exists() else []
        )
    return files


def test_core_never_imports_its_consumers():
    offenders = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in _core_files()
        for name in _imports(path)
        if name.startswith(CONSUMERS)
    ]
    assert offenders == []


def test_ir_does_not_import_onnx_or_torch():
    offenders = [
        f"{path.name} imports {name}"
        for path in sorted((PACKAGE / "ir").rglob("*.py"))
        for name in _imports(path)
        if name.split(".")[0] in ("onnx", "onnxruntime", "torch")
    ]
    assert offenders == []


def test_onnx_path_runs_without_torch(tmp_path):
    script = (
        "import sys; sys.modules['torch'] = None\n"  # any 'import torch' now raises ImportError
        "import onnx, optimizer\n"
        "from optimizer.examples import example_model\n"
        "out = optimizer.optimize(example_model())\n"
        "assert len(out.graph.node) < len(example_model().graph.node)\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
