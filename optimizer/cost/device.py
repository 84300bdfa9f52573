"""The device a cost is measured on, and the key that ties stored measurements to it.

A timing or a calibration is only valid for the machine, execution provider, thread count and
onnxruntime version that produced it, so all of them enter :meth:`DeviceSpec.key`.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from optimizer.errors import GraphoptError
from optimizer.runtime import SessionOptionsSpec, available_devices, providers_for

__all__ = ["DEVICES", "DeviceSpec", "cpu_model", "gpu_names", "usable_cpus"]

DEVICES = ("cpu", "cuda")


@functools.cache
def cpu_model() -> str:
    """The CPU's name from ``/proc/cpuinfo`` (or what :mod:`platform` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


@functools.cache
def gpu_names() -> tuple[str, ...]:
    """Names of the NVIDIA GPUs ``nvidia-smi`` lists (empty without one)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return ()
    try:
        text = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; containers often restrict it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class DeviceSpec:
    """Where and how onnxruntime runs what a cost model times.

    - ``device``: "cpu", "cuda" (CUDA execution provider, CPU fallback) or "auto" (CUDA when
      onnxruntime has it, else the CPU);
    - ``threads``: intra-op threads (None: the usable CPUs), fixed so timings are repeatable;
    - ``opt_level``: onnxruntime's graph optimization level of the one-node sessions that time
      single ops (whole models are always timed at "all", see :mod:`optimizer.cost.rerank`).
      At "all" (the default, the level models run at) a Conv or pool on the CPU is timed as the
      NCHWc kernel onnxruntime's layout pass makes of it, without the per-node reorders a model
      does not pay (:func:`optimizer.cost.isolate.nchwc_core`).
    """

    device: str = "cpu"
    threads: int | None = None
    opt_level: str = "all"

    def __post_init__(self) -> None:
        if self.device == "auto":  # as optimizer.runtime: CUDA when onnxruntime has it
            object.__setattr__(self, "device", available_devices()[-1])
        if self.device not in DEVICES:
            raise GraphoptError(f"unknown device {self.device!r}: expected cpu, cuda or auto")
        if self.threads is not None and self.threads < 1:
            raise GraphoptError(f"threads must be >= 1, got {self.threads}")

    @property
    def effective_threads(self) -> int:
        """The intra-op thread count actually used."""
        return self.threads or usable_cpus()

    @property
    def provider(self) -> str:
        """The execution provider that runs the ops (the first of :meth:`providers`)."""
        first = self.providers()[0]
        return first if isinstance(first, str) else first[0]

    def providers(self) -> list:
        """onnxruntime providers for :attr:`device` (raises when CUDA is unavailable)."""
        return providers_for(self.device)

    def session_options(self) -> SessionOptionsSpec:
        """Session settings: fixed threads, and spinning off so that an idle session never
        steals the cores of the one being timed (ANCHORS.md)."""
        return SessionOptionsSpec(
            opt_level=self.opt_level,
            intra_op_threads=self.effective_threads,
            allow_spinning=False,
        )

    def with_opt_level(self, opt_level: str) -> DeviceSpec:
        """The same device with another optimization level."""
        return DeviceSpec(self.device, self.threads, opt_level)

    def key(self) -> dict[str, object]:
        """What a measurement on this device depends on (JSON-ready)."""
        key: dict[str, object] = {
            "cpu": cpu_model(),
            "provider": self.provider,
            "threads": self.effective_threads,
            "onnxruntime": ort.__version__,
            "opt_level": self.opt_level,
        }
        if self.device == "cuda":
            key["gpus"] = list(gpu_names())
        return key

    def describe(self) -> str:
        """One line for reports: ``cpu (AMD EPYC ..., 2 threads, onnxruntime 1.32.0)``."""
        where = ", ".join(gpu_names()) if self.device == "cuda" else cpu_model()
        return (
            f"{self.device} ({where}, {self.effective_threads} threads, "
            f"onnxruntime {ort.__version__})"
        )
