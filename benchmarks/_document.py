"""What every benchmark script's JSON document starts with, and how numpy values are written.

Shared by the scripts that write ``benchmarks/results`` (cost ranking, rule audit) and the
labelling and explanation snippets, so that each records its machine, device, load, arguments
and command line the same way.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optimizer.bench.machine import describe_machine, machine_line


def start_document(
    schema: str, module: str, args: Any, argv: Sequence[str] | None, device: Any
) -> dict[str, Any]:
    """The opening fields of a run's JSON document: schema, machine (and its one-line
    description), ``device.key()``, the load average now, the parsed ``args`` and the command
    that reruns it (``python -m MODULE ARGV``); ``models`` starts empty."""
    machine = describe_machine()
    return {
        "schema": schema,
        "machine": machine,
        "device": device.key(),
        "loadavg_start": list(os.getloadavg()),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "command": " ".join(["python -m", module, *(argv or sys.argv[1:])]),
        "models": [],
        "machine_line": machine_line(machine),
    }


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays."""
    if getattr(value, "ndim", 0) > 0:
        return value.tolist()  # arrays (item() refuses more than one element)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
