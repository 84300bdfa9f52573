"""``graphopt bench``: run a benchmark suite of the model zoo against onnxruntime and the peers.

Registered on the main app in :mod:`optimizer.cli`; errors follow that module's conventions
(one line on stderr; exit 2 for bad input). Exit status 1 when graphopt's output differs from
an original model's on any model (the promise the suite exists to check).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from optimizer.errors import GraphoptError


def _models(value: str | None) -> tuple[str, ...] | None:
    if not value:
        return None
    names = tuple(m.strip() for m in value.split(",") if m.strip())
    return names or None


def bench(
    suite: Annotated[str, typer.Option(help="Suite to run: taso, modern or quick.")] = "quick",
    models: Annotated[
        str | None, typer.Option(help="Only these models, comma-separated (e.g. resnet50,vgg19).")
    ] = None,
    device: Annotated[str, typer.Option(help="Where to time the models: cpu or cuda.")] = "cpu",
    search: Annotated[str, typer.Option(help="graphopt's search algorithm.")] = "auto",
    time_limit: Annotated[
        float, typer.Option(min=0.001, help="Seconds graphopt's search may take per model.")
    ] = 10.0,
    peers: Annotated[
        bool,
        typer.Option(
            "--peers/--no-peers",
            help="Also run onnxsim, onnxoptimizer, onnxscript and onnxruntime.transformers "
            "(pip install 'graphopt[bench]').",
        ),
    ] = False,
    torch_rows: Annotated[
        bool,
        typer.Option("--torch/--no-torch", help="Also time torch eager and torch.compile."),
    ] = False,
    fresh_compiles: Annotated[
        bool,
        typer.Option(
            "--fresh-compiles/--no-fresh-compiles",
            help="With --torch: also time inductor's and graphopt's compile cold and warm, "
            "each in a fresh process over caches of its own (minutes per model).",
        ),
    ] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default: ./bench-SUITE).")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Batch size of the exported models.")] = 1,
    threads: Annotated[
        int | None, typer.Option(min=1, help="onnxruntime intra-op threads (default: all CPUs).")
    ] = None,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved timing rounds.")] = 20,
    keep_models: Annotated[
        bool, typer.Option(help="Keep the optimized models under OUT/models.")
    ] = False,
) -> None:
    """Benchmark a suite: optimize time, nodes, cost and latency speedups, peers side by side.

    Writes OUT/results.json, OUT/results.md and OUT/speedup.png.
    """
    # Imported here: optimizer.cli imports this module to register the command.
    from optimizer.cli import EXIT_CHECK_FAILED, _guarded, err

    def action() -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from optimizer.bench import report
        from optimizer.bench.runner import BenchConfig, run_bench, selected_models

        if device not in ("cpu", "cuda"):
            raise GraphoptError(f"unknown device {device!r}: expected cpu or cuda")
        config = BenchConfig(
            suite=suite, models=_models(models), device=device, search=search,
            time_limit=time_limit, peers=peers, torch=torch_rows,
            fresh_compiles=fresh_compiles, out=out_dir or Path(f"bench-{suite}"), batch=batch,
            threads=threads,
            rounds=rounds, keep_models=keep_models,
        )  # fmt: skip
        from optimizer.api import OptimizeOptions

        OptimizeOptions(search=search)  # validates the algorithm's name before any work
        names = selected_models(config)
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=err, transient=True,
        ) as progress:  # fmt: skip
            task = progress.add_task(f"suite {suite}", total=len(names))

            def status(model: str, step: str) -> None:
                progress.update(task, description=f"{model}: {step}")

            document = run_bench(
                config, status=status, on_model_done=lambda _: progress.advance(task)
            )
        written = report.write_reports(document, config.out)
        _print_summary(document)
        err.print(
            f"wrote {config.out / 'results.json'}, " + ", ".join(str(p) for p in written.values()),
            markup=False,
        )
        if not document["summary"]["graphopt_outputs_match"]:
            bad = [
                e["name"] for e in document["models"]
                if e.get("systems", {}).get("graphopt", {}).get("outputs_match") is not True
            ]  # fmt: skip
            err.print(
                "graphopt: error: graphopt's model did not match (or was not produced) for: "
                + ", ".join(bad), markup=False,
            )  # fmt: skip
            raise typer.Exit(EXIT_CHECK_FAILED)

    _guarded(action)


def _print_summary(document: dict) -> None:
    from optimizer.bench.report import ORDER, speedup_cell
    from optimizer.cli import out

    systems = [
        s for s in ORDER
        if any(s in e.get("systems", {}) for e in document["models"])
    ]  # fmt: skip
    table = Table(title=f"graphopt bench: suite {document['suite']} (speedup over ORT-all)")
    for column in ["model", "nodes", "ORT-all ms", *systems]:
        table.add_column(column, overflow="fold")
    for entry in document["models"]:
        if entry.get("status") != "ok":
            table.add_row(entry["name"], escape(f"error: {entry.get('error')}"))
            continue
        res = entry["systems"]
        nodes = f"{res['original'].get('nodes')} → {res.get('graphopt', {}).get('nodes')}"
        latency = res["original"].get("latency_ms")
        table.add_row(
            entry["name"], nodes, "-" if latency is None else f"{latency:.2f}",
            *(escape(speedup_cell(res.get(s), quartiles=False)) for s in systems),
        )  # fmt: skip
    means = document["summary"]["geomean_speedup"]
    table.add_row(
        "geomean", "", "", *("-" if means.get(s) is None else f"{means[s]:.3f}x" for s in systems)
    )
    out.print(table)
