"""Writing the labeller's results (CSV or JSON, streamed, atomic) and showing them (rich).

:class:`TableWriter` writes rows chunk by chunk to ``.csv`` or ``.json`` (``{"rows": [...],
"summary": {...}}``) through a temporary file that replaces the destination only when the
whole table was written, so a failure leaves nothing behind. :func:`summary_table` and
:func:`preview_table` render to a rich console; :func:`progress_bar` reports rows done.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from optimizer.label.exceptions import LabelDataError

FORMATS = (".csv", ".json")


def _plain(value: Any) -> Any:
    """A JSON/CSV-friendly Python value (numpy scalars and arrays unwrapped, NaN as None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def check_output_path(path: str | os.PathLike) -> Path:
    """``path`` when it ends in .csv or .json and its folder exists (else a clear error)."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise LabelDataError(f"{path}: output must end in .csv or .json")
    if not path.parent.resolve().is_dir():
        raise LabelDataError(f"{path.parent}: no such folder for the output")
    return path


class TableWriter:
    """Rows to a ``.csv`` or ``.json`` file, appended chunk by chunk (use as a context
    manager; the file appears only when the block exits without an error)."""

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]) -> None:
        self.path = check_output_path(path)
        self.columns = list(columns)
        self.json = self.path.suffix.lower() == ".json"
        self.summary: dict[str, Any] = {}
        self.rows = 0
        self._tmp: Path | None = None
        self._f = None

    def __enter__(self) -> TableWriter:
        fd, name = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent.resolve()
        )
        self._tmp = Path(name)
        self._f = os.fdopen(fd, "w", newline="", encoding="utf-8")
        if self.json:
            self._f.write('{"rows": [')
        else:
            self._csv = csv.writer(self._f)
            self._csv.writerow(self.columns)
        return self

    def write(self, data: Mapping[str, Sequence[Any] | np.ndarray]) -> None:
        """Append rows given column-wise (every column of the header, equal lengths)."""
        missing = [c for c in self.columns if c not in data]
        if missing:
            raise ValueError(f"rows lack columns {missing}")
        cols = [data[c] for c in self.columns]
        n = len(cols[0]) if cols else 0
        for k in range(n):
            values = [_plain(col[k]) for col in cols]
            if self.json:
                record = json.dumps(dict(zip(self.columns, values)), ensure_ascii=False)
                self._f.write(("," if self.rows else "") + "\n  " + record)
            else:
                self._csv.writerow(
                    [
                        "" if v is None else json.dumps(v) if isinstance(v, list) else v
                        for v in values
                    ]
                )
            self.rows += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self._f is not None and self._tmp is not None
        try:
            if exc_type is None and self.json:
                summary = json.dumps(_plain(self.summary), ensure_ascii=False, indent=2)
                self._f.write('\n], "summary": ' + summary + "}\n")
            self._f.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
        finally:
            if self._tmp.exists():
                self._tmp.unlink()


def write_table(
    path: str | os.PathLike,
    data: Mapping[str, Sequence[Any] | np.ndarray],
    *,
    summary: Mapping[str, Any] | None = None,
) -> Path:
    """Write a whole column-wise table (see :class:`TableWriter`); returns the path."""
    with TableWriter(path, list(data)) as writer:
        writer.summary = dict(summary or {})
        writer.write(data)
    return writer.path


def write_json(path: str | os.PathLike, document: Mapping[str, Any]) -> Path:
    """Write a JSON document atomically."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent.resolve())
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(_plain(dict(document)), f, ensure_ascii=False, indent=2)
            f.write("\n")
        os.replace(name, path)
    finally:
        if os.path.exists(name):
            os.unlink(name)
    return path


def save_array(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Save an array as ``.npy`` atomically."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise LabelDataError(f"{path}: arrays are written as .npy")
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npy", dir=path.parent.resolve())
    os.close(fd)
    try:
        np.save(name, array)
        os.replace(name, path)
    finally:
        if os.path.exists(name):
            os.unlink(name)
    return path


def _fmt(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value[:6]) + (" ..." if len(value) > 6 else "")
    return str(value)


def summary_table(title: str, items: Mapping[str, Any]) -> Table:
    """A two-column table of named figures."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("", style="bold")
    table.add_column("")
    for key, value in items.items():
        table.add_row(key, _fmt(value))
    return table


def preview_table(
    title: str, data: Mapping[str, Sequence[Any] | np.ndarray], *, limit: int = 10
) -> Table:
    """The first ``limit`` rows of a column-wise table."""
    table = Table(title=title, title_justify="left")
    for name in data:
        table.add_column(name, overflow="fold")
    n = len(next(iter(data.values()))) if data else 0
    for k in range(min(n, limit)):
        table.add_row(*(_fmt(col[k]) for col in data.values()))
    if n > limit:
        table.caption = f"{limit} of {n} rows shown"
    return table


@contextlib.contextmanager
def progress_bar(
    total: int | None, description: str, *, console: Console | None = None, enabled: bool = True
) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar over rows; yields ``advance(n)`` (None when disabled)."""
    if not enabled:
        yield None
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
