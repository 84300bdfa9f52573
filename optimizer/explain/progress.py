"""A rich progress bar that explanation loops advance by the examples (or masks) each run did."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


@contextmanager
def progress_bar(
    total: int, description: str, enabled: bool
) -> Iterator[Callable[[int], None] | None]:
    """Yield ``advance(n)`` for a bar of ``total`` steps, or None when ``enabled`` is False."""
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)
