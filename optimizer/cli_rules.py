"""``graphopt rules list`` and ``graphopt rules verify``: the rule library and its proofs.

Registered on the main app in :mod:`optimizer.cli` as the ``rules`` sub-command;
errors follow that module's conventions (one line on stderr; exit 2 for bad
input, 1 when a shipped rule fails verification).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from optimizer.cli import EXIT_CHECK_FAILED, _guarded, err, out
from optimizer.errors import GraphoptError

rules_app = typer.Typer(
    name="rules",
    help="List the rewrite rules and verify them (z3 proofs and onnxruntime checks).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RulesDir = Annotated[
    Path | None,
    typer.Option("--rules-dir", help="Read rules from this folder instead of the shipped library."),
]


def _load(rules_dir: Path | None):
    from optimizer.rewrite.rule import RuleSyntaxError, load_rules

    if rules_dir is not None and not rules_dir.is_dir():
        raise GraphoptError(f"{rules_dir}: no such folder")
    try:
        return load_rules(rules_dir)
    except RuleSyntaxError as exc:
        raise GraphoptError(f"rule syntax: {exc}") from None


@rules_app.command("list")
def list_rules(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    rules_dir: RulesDir = None,
) -> None:
    """List every rule: name, family, outputs and what it does."""

    def action() -> None:
        rules = _load(rules_dir)
        if as_json:
            data = [
                {
                    "name": r.name,
                    "family": r.family,
                    "comment": r.comment,
                    "outputs": list(r.outputs),
                    "digest": r.digest,
                    "path": r.path,
                    "line": r.line,
                }
                for r in rules
            ]
            out.print_json(json.dumps({"count": len(rules), "rules": data}))
            return
        table = Table(
            "rule",
            "family",
            "outputs",
            "comment",
            title=f"{len(rules)} rules",
            title_justify="left",
        )
        for r in rules:
            table.add_row(r.name, r.family, ", ".join(r.outputs), escape(r.comment))
        out.print(table)

    _guarded(action)


@rules_app.command("verify")
def verify(
    names: Annotated[
        list[str] | None, typer.Argument(help="Rules to verify (default: all).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    jobs: Annotated[
        int | None,
        typer.Option("-j", "--jobs", help="Worker processes (default: CPU count).", min=1),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Ignore and do not use cached results.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds per z3 query.", min=0.1)] = 10.0,
    rules_dir: RulesDir = None,
) -> None:
    """Prove each rule (bounded and, where possible, for all shapes) and check it on onnxruntime.

    Exits 1 when any rule is not proved, printing its counterexample."""

    def action() -> None:
        from optimizer.verify.library import verify_rules

        rules = _load(rules_dir)
        if names:
            known = {r.name: r for r in rules}
            missing = [n for n in names if n not in known]
            if missing:
                raise GraphoptError(
                    f"unknown rule {missing[0]!r} ({len(rules)} rules; see 'graphopt rules list')"
                )
            rules = [known[n] for n in dict.fromkeys(names)]
        start = time.monotonic()
        hits = []
        with _progress(not as_json and err.is_terminal, len(rules)) as (bar, task):

            def advance(result, cached: bool) -> None:
                hits.append(cached)
                if bar is not None:
                    bar.update(task, advance=1, description=f"{result.name} ({result.status})")

            results = verify_rules(
                rules,
                jobs=jobs or os.cpu_count(),
                use_cache=not no_cache,
                on_result=advance,
                timeout_ms=int(timeout * 1000),
            )
        seconds = time.monotonic() - start
        failed = [r for r in results if not r.ok]
        if as_json:
            out.print_json(
                json.dumps(
                    {
                        "ok": not failed,
                        "count": len(results),
                        "proved": len(results) - len(failed),
                        "all_shapes": sum(r.ok and r.method == "all-shapes" for r in results),
                        "cached": sum(hits),
                        "seconds": round(seconds, 2),
                        "rules": [r.to_json() for r in results],
                    }
                )
            )
        else:
            _print_table(results, seconds)
        if failed:
            raise typer.Exit(EXIT_CHECK_FAILED)

    _guarded(action)


class _progress:
    """A rich progress bar on stderr (a no-op when disabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self.bar = None

    def __enter__(self):
        if not self.enabled:
            return None, None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.bar = Progress(
            TextColumn("verifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=err,
            transient=True,
        )
        self.bar.__enter__()
        return self.bar, self.bar.add_task("", total=self.total)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


_STYLE = {
    "proved": "green",
    "refuted": "bold red",
    "unsafe": "red",
    "unknown": "yellow",
    "no-instance": "yellow",
    "error": "bold red",
}


def _print_table(results, seconds: float) -> None:
    table = Table("rule", "family", "method", "status", "seconds", title_justify="left")
    for r in results:
        table.add_row(
            r.name,
            r.family,
            r.method,
            f"[{_STYLE.get(r.status, '')}]{r.status}[/]",
            f"{r.seconds:.2f}",
        )
    out.print(table)
    proved = sum(r.ok for r in results)
    shapes = sum(r.ok and r.method == "all-shapes" for r in results)
    out.print(
        f"{proved}/{len(results)} rules proved ({shapes} for all shapes) in {seconds:.1f} s",
        markup=False,
    )
    for r in results:
        if r.ok:
            continue
        out.print(f"\n{r.name}: {r.status}: {r.message}", markup=False, highlight=False)
        if r.counterexample:
            out.print(r.counterexample, markup=False, highlight=False)
