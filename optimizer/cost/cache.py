"""Where the cost models keep what they measured: a JSON file per kind in the user cache folder.

The folder is ``$GRAPHOPT_CACHE_DIR``, else ``$XDG_CACHE_HOME/graphopt``, else
``~/.cache/graphopt`` (the verifier's rule, :mod:`optimizer.verify.cache`), or whatever folder a
caller (``graphopt cost --cache DIR``) passes. Per-op timings live in ``cost-timings.json``,
device calibrations in ``cost-calibration.json``.

Writes are atomic (a temporary file renamed into place) and merge with what another process
wrote meanwhile, so two optimizers sharing a cache lose nothing but a race on the same key.
A damaged or unreadable file is ignored, never fatal: a cache only saves time.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["CALIBRATION_FILE", "TIMINGS_FILE", "JsonStore", "cache_dir"]

TIMINGS_FILE = "cost-timings.json"
CALIBRATION_FILE = "cost-calibration.json"
#: Bump when the meaning of stored entries changes; older files are then ignored.
FORMAT = 1


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The user cache folder of graphopt (``override`` wins when given)."""
    if override is not None:
        return Path(override).expanduser()
    if os.environ.get("GRAPHOPT_CACHE_DIR"):
        return Path(os.environ["GRAPHOPT_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "graphopt"
    return Path.home() / ".cache" / "graphopt"


class JsonStore:
    """A string-keyed table of JSON objects backed by one file.

    Reads the file once; :meth:`put` records in memory; :meth:`save` merges the file's current
    content with the new entries and writes atomically. Only entries put since the last save
    are written over what is on disk, so concurrent writers keep each other's keys.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.entries: dict[str, dict[str, Any]] = self._read()
        self._dirty: dict[str, dict[str, Any]] = {}

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            return {}
        entries = data.get("entries")
        return entries if isinstance(entries, dict) else {}

    def get(self, key: str) -> dict[str, Any] | None:
        """The entry stored under ``key``, if any."""
        entry = self.entries.get(key)
        return entry if isinstance(entry, dict) else None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        """Record ``entry`` under ``key`` (written by the next :meth:`save`)."""
        self.entries[key] = entry
        self._dirty[key] = entry

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    @property
    def dirty(self) -> bool:
        """Whether entries were put since the last save."""
        return bool(self._dirty)

    def save(self) -> bool:
        """Merge with the file and write atomically; False when the folder is not writable."""
        if not self._dirty:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            merged = {**self._read(), **self._dirty}
            fd, tmp = tempfile.mkstemp(prefix=".cost-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump({"format": FORMAT, "entries": merged}, f, indent=0, sort_keys=True)
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            return False
        self.entries = {**merged, **self.entries}
        self._dirty.clear()
        return True
