"""The ``graphopt`` command line (typer for parsing, rich for tables and progress).

Conventions follow onnxsim and polygraphy: ``graphopt optimize IN [-o OUT]``,
``--input-shape name:1,3,224,224``, ``--check/--no-check``. Every error a
user can cause is one line on stderr and exit status 2; a failed numeric
check exits 1. Set ``GRAPHOPT_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from optimizer.errors import CheckFailedError, GraphoptError

app = typer.Typer(
    name="graphopt",
    help="Verified graph-level optimizer for ONNX models.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)  # paths and messages stay on one line for scripts
err = Console(stderr=True, soft_wrap=True)

EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3

InputShapes = Annotated[
    list[str] | None,
    typer.Option("--input-shape", help="Fix an input's shape: NAME:D1,D2,... (repeatable)."),
]


def _fail(message: str, code: int) -> None:
    err.print(f"graphopt: error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _guarded(action: Callable[[], None]) -> None:
    """Run a command, turning every exception into one line and an exit status."""
    try:
        action()
    except typer.Exit:
        raise
    except CheckFailedError as exc:
        _fail(f"numeric check failed, nothing written: {exc}", EXIT_CHECK_FAILED)
    except GraphoptError as exc:
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - the CLI must never print a traceback
        if os.environ.get("GRAPHOPT_DEBUG"):
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        _fail(
            f"internal error ({type(exc).__name__}): {first} (GRAPHOPT_DEBUG=1 shows more)",
            EXIT_INTERNAL,
        )


def _shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]] | None:
    if not specs:
        return None
    from optimizer.runtime import parse_input_shapes

    return parse_input_shapes(specs)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _progress(enabled: bool):
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not enabled,
    )


@app.command()
def optimize(
    model: Annotated[Path, typer.Argument(help="The ONNX model to optimize.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Where to write (default IN.opt.onnx).")
    ] = None,
    input_shape: InputShapes = None,
    check: Annotated[bool, typer.Option(help="Compare outputs with the original first.")] = True,
    rtol: Annotated[float, typer.Option(help="Relative tolerance of the check.")] = 1e-4,
    atol: Annotated[float, typer.Option(help="Absolute tolerance of the check.")] = 1e-5,
    in_place: Annotated[bool, typer.Option(help="Overwrite the input file.")] = False,
    passes: Annotated[
        str | None, typer.Option(help="Comma-separated passes (default: all clean-up passes).")
    ] = None,
    fold_size_limit: Annotated[
        int, typer.Option(help="Largest tensor (bytes) constant folding may create.")
    ] = 64 * 1024 * 1024,
    device: Annotated[str, typer.Option(help="Device of the check: cpu, cuda or auto.")] = "cpu",
    external_data: Annotated[
        bool | None,
        typer.Option(help="Write weights to OUT.data (default: only past protobuf's 2 GB)."),
    ] = None,
    search: Annotated[
        str,
        typer.Option(help="Search: auto, greedy, taso, ocggs, ocggs-prune, ocggs-sample, eqsat."),
    ] = "auto",
    time_limit: Annotated[
        float, typer.Option(help="Seconds the search may take.", min=0.001)
    ] = 10.0,
    cost_model: Annotated[
        str, typer.Option(help="What the search minimises: analytic or measured.")
    ] = "analytic",
    seed: Annotated[int, typer.Option(help="Seed of searches that sample.")] = 0,
    guard: Annotated[
        bool,
        typer.Option(
            help="Keep the rewrites only when measured faster than the clean-up result on "
            "onnxruntime."
        ),
    ] = True,
    report_file: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Write the run's report: FILE.json (with the search trace) or FILE.html (each "
            "rewrite drawn, its rule's proof, and the drift bisection).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Optimize MODEL and write the result, only after it matched the original numerically."""

    def action() -> None:
        from optimizer.api import OptimizeOptions, optimize_file
        from optimizer.passes import PASSES

        if in_place and output is not None:
            raise GraphoptError("--in-place and --output exclude each other")
        options = OptimizeOptions(
            passes=tuple(p.strip() for p in passes.split(",") if p.strip()) if passes else PASSES,
            fold_size_limit=fold_size_limit,
            input_shapes=_shapes(input_shape),
            check=check,
            rtol=rtol,
            atol=atol,
            device=device,
            search=search,
            time_limit=time_limit,
            cost_model=cost_model,
            seed=seed,
            guard=guard,
        )
        report_kind = report_file.suffix.lower() if report_file is not None else None
        if report_kind not in (None, ".json", ".html"):
            raise GraphoptError(
                f"--report {report_file}: only .json reports and .html reports are written"
            )
        if report_file is not None and not report_file.resolve().parent.is_dir():
            raise GraphoptError(f"--report {report_file}: no such folder")
        unknown = [p for p in options.passes if p not in PASSES]
        if unknown:
            raise GraphoptError(f"unknown pass {unknown[0]!r}; passes: {', '.join(PASSES)}")
        explained = None
        if report_kind == ".html":
            from optimizer.explain.report_html import HtmlReport

            explained = HtmlReport(str(model), options.input_shapes, options.device)
        with _progress(not as_json and err.is_terminal) as bar:
            bar.add_task(f"optimizing {model.name}", total=None)
            with explained.recording() if explained else contextlib.nullcontext():
                report = optimize_file(
                    model, output, options, in_place=in_place, external_data=external_data,
                    on_graphs=explained.explain if explained else None,
                )  # fmt: skip
        if explained is not None:
            explained.write(report, report_file)
        elif report_file is not None:
            report_file.write_text(json.dumps(report.to_json(), indent=2) + "\n")
        if as_json:
            out.print_json(json.dumps(report.to_json()))
            return
        _print_report(report)

    _guarded(action)


def _print_report(report) -> None:
    table = Table(title=f"graphopt: {report.output_path}", title_justify="left")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    ops = sorted(set(report.before.op_histogram) | set(report.after.op_histogram))
    for op in ops:
        b, a = report.before.op_histogram.get(op, 0), report.after.op_histogram.get(op, 0)
        table.add_row(op, str(b), str(a), style=None if a == b else "bold")
    table.add_section()
    table.add_row("nodes", str(report.before.nodes), str(report.after.nodes))
    table.add_row("parameters", f"{report.before.parameters:,}", f"{report.after.parameters:,}")
    table.add_row("model size", _size(report.size_before), _size(report.size_after))
    out.print(table)
    checked = (
        f"outputs match (max abs error {report.max_abs_error:.2g})"
        if report.checked
        else "not checked"
    )
    trace = report.to_json().get("search")
    if trace is not None:
        ratio = trace["cost_after"] / trace["cost_before"] if trace["cost_before"] else 1.0
        out.print(
            f"search {trace['algorithm']}: {len(trace['steps'])} rewrites, estimated cost "
            f"x{ratio:.3f}, {trace['seconds']:.2f} s ({trace['stopped_by']})"
        )
    if report.guard is not None and report.guard.speedup is not None:
        out.print(
            f"guard: the rewritten model measured {report.guard.speedup:.3f}x the clean-up "
            f"result's speed on onnxruntime; kept the {report.guard.kept} model"
        )
    elif report.guard is not None and report.guard.kept == "cleaned":
        out.print(f"guard: kept the cleaned model ({report.guard.reason})", markup=False)
    out.print(f"took {report.seconds:.2f} s; {checked}")


@app.command()
def info(
    model: Annotated[Path, typer.Argument(help="The ONNX model to describe.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show opsets, inputs and outputs, op histogram, parameters and FLOPs of MODEL."""

    def action() -> None:
        from optimizer import onnx_io
        from optimizer.api import stored_stats

        # Describe the file as stored (as optimize's "before" column does): the importer
        # merges duplicate nodes and drops dead ones, the counts must not.
        proto = onnx_io.load_proto(model)
        graph, _ = onnx_io.import_model(proto, onnx_io.base_dir_of(model))
        stats = stored_stats(proto, graph)
        del proto, graph
        if as_json:
            data = stats.to_json()
            data["file_size"] = model.stat().st_size
            out.print_json(json.dumps(data))
            return
        out.print(f"[bold]{model}[/bold]  ({_size(model.stat().st_size)})")
        opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in stats.opsets.items())
        out.print(f"opsets: {opsets}")
        for kind, items in (("input", stats.inputs), ("output", stats.outputs)):
            for name, type_ in items:
                out.print(f"{kind:6} {name}: {type_}", markup=False)
        table = Table("op", "count")
        for op, count in sorted(stats.op_histogram.items(), key=lambda kv: (-kv[1], kv[0])):
            table.add_row(op, str(count))
        out.print(table)
        flops = f"{stats.flops:,}"
        if stats.nodes_without_flops:
            flops += f" (+{stats.nodes_without_flops} nodes with unknown shapes)"
        if any("?" in t or _symbolic(t) for _, t in stats.inputs):
            flops += " (symbolic dims counted as 1)"
        out.print(f"nodes: {stats.nodes}   parameters: {stats.parameters:,}   FLOPs: {flops}")

    _guarded(action)


@app.command("check")
def check_cmd(
    reference: Annotated[Path, typer.Argument(help="The reference model.")],
    candidate: Annotated[Path, typer.Argument(help="The model that should compute the same.")],
    input_shape: InputShapes = None,
    rtol: Annotated[float, typer.Option(help="Relative tolerance.")] = 1e-4,
    atol: Annotated[float, typer.Option(help="Absolute tolerance.")] = 1e-5,
    samples: Annotated[int, typer.Option(help="Random input sets to try.")] = 3,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Exit 0 when CANDIDATE computes the same outputs as REFERENCE, else 1."""

    def action() -> None:
        from optimizer import onnx_io, runtime

        # Both files must be usable models: a candidate that cannot even be read is bad
        # input (exit 2), not a difference (exit 1). Importing also checks its structure.
        for path in (reference, candidate):
            graph, _ = onnx_io.load(path)
            del graph  # release its lazily mapped weights before onnxruntime opens the file
        report = runtime.compare_models(
            str(reference),
            str(candidate),
            input_shapes=_shapes(input_shape),
            rtol=rtol,
            atol=atol,
            num_samples=samples,
            device=device,
        )
        if as_json:
            out.print_json(
                json.dumps(
                    {
                        "ok": report.ok,
                        "outputs": [
                            {
                                "name": o.name,
                                "ok": o.ok,
                                "max_abs_err": _finite(o.max_abs_err),
                                "max_rel_err": _finite(o.max_rel_err),
                                "reason": o.reason,
                            }
                            for o in report.outputs
                        ],
                    }
                )
            )
        else:
            out.print(
                "equivalent" if report.ok else f"different: {report.summary()}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
        if not report.ok:
            raise typer.Exit(EXIT_CHECK_FAILED)

    _guarded(action)


def _symbolic(type_text: str) -> bool:
    dims = type_text[type_text.find("[") + 1 : -1].split(",")
    return any(d and not d.isdigit() for d in dims)


def _finite(x: float) -> float | None:
    return x if x == x and abs(x) != float("inf") else None


@app.command()
def example(
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write it.")] = Path(
        "example.onnx"
    ),
) -> None:
    """Write the built-in example model (a small CNN with typical exporter leftovers)."""

    def action() -> None:
        import onnx

        from optimizer.examples import example_model

        onnx.save(example_model(), output)
        out.print(f"wrote {output}", markup=False)

    _guarded(action)


from optimizer.cli_bench import bench  # noqa: E402 - these modules import this one
from optimizer.cli_cost import cost  # noqa: E402
from optimizer.cli_rules import rules_app  # noqa: E402
from optimizer.explain.cli import app as explain_app  # noqa: E402
from optimizer.label.cli import app as label_app  # noqa: E402

app.add_typer(rules_app, name="rules")
app.add_typer(label_app, name="label")
app.add_typer(explain_app, name="explain")
app.command()(bench)
app.command()(cost)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
