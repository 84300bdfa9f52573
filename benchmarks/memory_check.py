"""Peak memory of ``graphopt optimize`` on ResNet-50 (~100 MB of weights).

Builds torchvision's ResNet-50 in plain torch (random weights, no download), exports it with
``torch.onnx.export(..., dynamo=True)`` into a folder (in a separate process, so that torch's
memory cannot leak into the figures), then runs the installed ``graphopt`` script and reads
its peak resident set size from ``/usr/bin/time -v`` (fallback: ``os.wait4``'s
``ru_maxrss``; Linux keeps a forked child's high-water mark across exec, so this script keeps
its own memory small):

- ``graphopt optimize MODEL --no-check -o OUT`` (the requirement: peak <= 2x the model size),
- ``graphopt optimize MODEL -o OUT`` (with the numeric check on onnxruntime),
- ``graphopt example`` as a baseline: the interpreter plus onnx, onnxruntime and numpy.

Usage::

    python benchmarks/memory_check.py [--dir DIR] [--keep] [--json] [--limit 2.0]

Exit status 1 when ``--no-check`` peaks above ``--limit`` times the model size.
Needs the torch extra (``pip install ".[torch]"``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

MiB = 1024 * 1024


def _graphopt() -> str:
    script = shutil.which("graphopt") or str(Path(sys.executable).with_name("graphopt"))
    if not Path(script).exists():
        sys.exit("memory_check: the graphopt script is not installed (pip install -e .)")
    return script


TIME = "/usr/bin/time"
_MARK = "graphopt-memcheck-maxrss-kib="


def measure(argv: list[str], cwd: Path) -> dict:
    """Run ``argv``; return exit status, wall seconds and the child's peak RSS in bytes."""
    env = {k: v for k, v in os.environ.items() if k != "GRAPHOPT_DEBUG"}
    use_time = os.access(TIME, os.X_OK)
    cmd = [TIME, "-f", _MARK + "%M", *argv] if use_time else argv
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # Read the pipes before waiting so a chatty child cannot block on a full pipe.
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen.wait
    wall = time.perf_counter() - start
    peak_kib = usage.ru_maxrss  # Linux reports KiB
    if use_time:
        lines = stderr.splitlines()
        found = [ln for ln in lines if ln.startswith(_MARK)]
        if found:
            peak_kib = int(found[-1][len(_MARK) :])
            stderr = "\n".join(ln for ln in lines if not ln.startswith(_MARK))
    return {
        "argv": argv,
        "returncode": proc.returncode,
        "seconds": wall,
        "peak_rss": peak_kib * 1024,
        "via": "/usr/bin/time" if use_time else "wait4",
        "stdout": stdout,
        "stderr": stderr,
    }


def export_resnet50(folder: Path, raw: bool) -> Path:
    """Export ResNet-50 in a child process (see :func:`_export`); returns the file."""
    cmd = [sys.executable, __file__, "--export-only", "--dir", str(folder)]
    subprocess.run(cmd + (["--raw"] if raw else []), check=True)
    return folder / "resnet50.onnx"


def _export(folder: Path, raw: bool) -> Path:
    """Export ResNet-50 (batch dynamic) to ``folder/resnet50.onnx`` with weights inline."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import models  # tests/models.py: the shared model builders

    path = folder / "resnet50.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = models.resnet50()
        params = sum(p.numel() for p in module.parameters())
        models.export_onnx(
            module, models.example_inputs("resnet50", batch=1), path, optimize=not raw
        )
    print(
        f"exported ResNet-50 ({params / 1e6:.2f}M parameters) with the "
        f"{models.EXPORTER_USED[str(path)]} exporter{' (raw)' if raw else ''}: {path}",
        file=sys.stderr,
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, help="working folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    parser.add_argument("--model", type=Path, help="measure this ONNX file instead of ResNet-50")
    parser.add_argument(
        "--raw", action="store_true", help="export without the exporter's own clean-up"
    )
    parser.add_argument("--limit", type=float, default=2.0, help="allowed peak/size (--no-check)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--export-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.export_only:
        _export(args.dir, args.raw)
        return 0

    folder = args.dir or Path(tempfile.mkdtemp(prefix="graphopt-memcheck-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        model = args.model.resolve() if args.model else export_resnet50(folder, args.raw)
        size = model.stat().st_size
        script = _graphopt()
        runs = {
            "baseline (graphopt example)": [script, "example", "-o", str(folder / "ex.onnx")],
            "optimize --no-check": [
                script, "optimize", str(model), "--no-check", "-o", str(folder / "out-nocheck.onnx")
            ],
            "optimize (check on)": [
                script, "optimize", str(model), "-o", str(folder / "out-check.onnx")
            ],
        }  # fmt: skip
        results = {}
        for label, cmd in runs.items():
            result = measure(cmd, folder)
            if result["returncode"] != 0:
                print(f"{label}: exit {result['returncode']}\n{result['stderr']}", file=sys.stderr)
            results[label] = result
        out_size = (folder / "out-nocheck.onnx").stat().st_size
        figures = {
            "model": str(model),
            "model_bytes": size,
            "output_bytes": out_size,
            "runs": {
                label: {
                    "returncode": r["returncode"],
                    "seconds": round(r["seconds"], 2),
                    "peak_rss_bytes": r["peak_rss"],
                    "peak_over_size": round(r["peak_rss"] / size, 3),
                    "measured_by": r["via"],
                }
                for label, r in results.items()
            },
        }
        if args.json:
            print(json.dumps(figures, indent=2))
        else:
            print(f"model: {model}  {size / MiB:.1f} MiB  (optimized: {out_size / MiB:.1f} MiB)")
            print(f"{'run':<30}{'exit':>5}{'wall s':>9}{'peak RSS MiB':>14}{'peak/size':>11}")
            for label, r in figures["runs"].items():
                print(
                    f"{label:<30}{r['returncode']:>5}{r['seconds']:>9.2f}"
                    f"{r['peak_rss_bytes'] / MiB:>14.1f}{r['peak_over_size']:>11.2f}"
                )
        nocheck = figures["runs"]["optimize --no-check"]
        ok = nocheck["returncode"] == 0 and nocheck["peak_over_size"] <= args.limit
        verdict = "within" if ok else "NOT within"
        print(f"--no-check peak is {verdict} {args.limit:g}x the model size", file=sys.stderr)
        return 0 if ok and all(r["returncode"] == 0 for r in results.values()) else 1
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
