"""Describe the machine a benchmark ran on: CPU model, cores, memory, GPU, library versions.

Benchmark figures are only meaningful beside the machine that produced them (ANCHORS.md), so
every result file carries this description.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

#: Distributions whose versions shape the figures.
VERSIONED = ("graphopt", "onnx", "onnxruntime", "onnxruntime-gpu", "numpy", "torch", "onnxscript")


def _cpuinfo() -> list[dict[str, str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    blocks = []
    for block in text.strip().split("\n\n"):
        entry = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                entry[key.strip()] = value.strip()
        blocks.append(entry)
    return blocks


def cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo``), or what :mod:`platform` knows."""
    for entry in _cpuinfo():
        if entry.get("model name"):
            return entry["model name"]
    return platform.processor() or platform.machine() or "unknown"


#: Instruction-set extensions that change which kernels onnxruntime and torch pick.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def isa_extensions() -> list[str]:
    """The :data:`ISA_FLAGS` this CPU reports."""
    flags = set()
    for entry in _cpuinfo()[:1]:
        flags = set(entry.get("flags", "").split())
    return [f for f in ISA_FLAGS if f in flags]


def physical_cores() -> int | None:
    """Distinct (package, core) pairs in ``/proc/cpuinfo``; None when it cannot tell."""
    pairs = {
        (e.get("physical id"), e.get("core id"))
        for e in _cpuinfo()
        if e.get("core id") is not None
    }
    return len(pairs) or None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; containers often restrict it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def memory_gib() -> float | None:
    """Total memory in GiB (``/proc/meminfo``)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def gpu_names() -> list[str]:
    """Names of the NVIDIA GPUs ``nvidia-smi`` lists (empty without one)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def versions(extra: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Installed versions of :data:`VERSIONED` and ``extra`` (None where not installed)."""
    found: dict[str, str | None] = {}
    for dist in (*VERSIONED, *extra):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    return found


def describe_machine(extra_packages: tuple[str, ...] = ()) -> dict:
    """A JSON-ready description of this machine and the software the figures depend on."""
    return {
        "cpu": cpu_model(),
        "isa": isa_extensions(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(),
        "usable_cpus": usable_cpus(),
        "memory_gib": memory_gib(),
        "gpus": gpu_names(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions(extra_packages),
    }


def machine_line(machine: dict) -> str:
    """One line for table captions: ``AMD EPYC 9B14, 2 CPUs, 24 GiB, onnxruntime 1.32.0``."""
    parts = [machine.get("cpu") or "unknown CPU", f"{machine.get('usable_cpus')} CPUs"]
    if machine.get("memory_gib"):
        parts.append(f"{machine['memory_gib']:g} GiB")
    parts.extend(machine.get("gpus") or [])
    ort_version = (machine.get("versions") or {}).get("onnxruntime") or (
        machine.get("versions") or {}
    ).get("onnxruntime-gpu")
    if ort_version:
        parts.append(f"onnxruntime {ort_version}")
    return ", ".join(parts)
