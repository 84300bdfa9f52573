"""Where the labelling benchmarks put their figures: ``results/<name>.json`` (the numbers, the
settings and the machine) and ``results/<name>.md`` (a Markdown snippet for RESULTS.md)."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from benchmarks._document import json_default

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """A short description of this machine and the library versions that matter."""
    import numpy
    import onnxruntime

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
        "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(),
    }


def write(name: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write the JSON figures and the Markdown snippet of benchmark ``name``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {**data, "machine": machine()}
    json_path = RESULTS / f"{name}.json"
    md_path = RESULTS / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2, default=json_default) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    return json_path, md_path


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""

    def cell(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
