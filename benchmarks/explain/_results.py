"""Where the explanation benchmarks put their figures: ``results/<name>.json`` (numbers,
settings, machine) and ``results/<name>.md`` (a snippet that ``python -m benchmarks.results``
puts into RESULTS.md under "Explanation")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks._document import json_default
from optimizer.bench.machine import describe_machine, machine_line

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """This machine and the versions the figures depend on (torch and captum included)."""
    return describe_machine(("torch", "captum"))


def write(name: str, data: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """Write the JSON figures and the Markdown snippet of benchmark ``name``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    info = machine()
    data = {**data, "machine": info}
    json_path, md_path = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    json_path.write_text(json.dumps(data, indent=2, default=json_default) + "\n")
    md_path.write_text(markdown.rstrip() + f"\n\n_Machine: {machine_line(info)}._\n")
    return json_path, md_path


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
