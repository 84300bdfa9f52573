"""On-disk cache of verification results, keyed by rule digest and verifier version.

The file is ``verify-cache.json`` in the user cache folder: ``$GRAPHOPT_CACHE_DIR``,
else ``$XDG_CACHE_HOME/graphopt``, else ``~/.cache/graphopt``. Writes are atomic
(temporary file and rename) and merge with what another process wrote meanwhile.
A damaged file is ignored, never fatal.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from optimizer.verify.verifier import VERIFIER_VERSION, RuleResult

FILE_NAME = "verify-cache.json"


def cache_dir() -> Path:
    """The user cache folder of graphopt."""
    if os.environ.get("GRAPHOPT_CACHE_DIR"):
        return Path(os.environ["GRAPHOPT_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "graphopt"
    return Path.home() / ".cache" / "graphopt"


def _key(digest: str) -> str:
    return f"{digest}:{VERIFIER_VERSION}"


class ResultCache:
    """Verification results by (rule digest, verifier version)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / FILE_NAME
        self.entries: dict[str, dict] = self._read()

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
            return data.get("results", {}) if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def get(self, digest: str, name: str) -> RuleResult | None:
        """The cached result of a rule, if its text and the verifier are unchanged."""
        entry = self.entries.get(_key(digest))
        if not entry or entry.get("name") != name:
            return None
        try:
            return RuleResult.from_json(entry)
        except TypeError:
            return None

    def put(self, result: RuleResult) -> None:
        self.entries[_key(result.digest)] = result.to_json()

    def save(self) -> None:
        """Merge with the file's current content and write atomically (best effort)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            merged = {**self._read(), **self.entries}
            fd, tmp = tempfile.mkstemp(prefix=".verify-", dir=self.path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump(
                    {"version": VERIFIER_VERSION, "results": merged}, f, indent=0, sort_keys=True
                )
            os.replace(tmp, self.path)
        except OSError:
            pass
