"""``graphopt label ...``: the labelling commands (a typer sub-app, registered by
:mod:`optimizer.cli` as ``label``).

    graphopt label predict DATA -m MODEL [-o OUT.csv|.json] [--embeddings EMB.npy]
    graphopt label uncertainty DATA -m MODEL [--mc-samples 20] [-o OUT]
    graphopt label select DATA -m MODEL -k 20 [--strategy margin] [--labeled IDS] [-o OUT]
    graphopt label errors DATA (-m MODEL | --probs P.npy) [--labels L | --label-column C]
    graphopt label crowd RECORDS.csv [--method dawid_skene] [-m MODEL --data DATA] [-o OUT]

Every command prints a summary table; ``-o`` writes CSV or JSON (by extension). Bad input is
one line ``graphopt: error: ...`` on stderr and exit status 2, with nothing written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console

from optimizer.label import report
from optimizer.label.exceptions import LabelDataError

app = typer.Typer(
    name="label",
    help="Model-assisted labelling: predictions, uncertainty, active learning, label errors, "
    "crowd aggregation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

def _guarded(action: Callable[[], None]) -> None:
    """optimizer.cli's conventions: any error becomes one line on stderr and an exit status.

    Imported when called: optimizer.cli imports this module to register the sub-app.
    """
    from optimizer.cli import _guarded as guarded

    guarded(action)


# ---------------------------------------------------------------- shared options

Data = Annotated[
    Path,
    typer.Argument(help="Dataset: .npy, .npz, .csv/.tsv, or a folder of images."),
]
ModelOpt = Annotated[Path | None, typer.Option("-m", "--model", help="The ONNX classifier.")]
OutOpt = Annotated[
    Path | None, typer.Option("-o", "--output", help="Write the results here (.csv or .json).")
]
Columns = Annotated[
    str | None, typer.Option(help="CSV feature columns, comma-separated (default: all others).")
]
LabelColumn = Annotated[str | None, typer.Option(help="CSV column holding the given labels.")]
IdColumn = Annotated[str | None, typer.Option(help="CSV column holding row ids.")]
Key = Annotated[str | None, typer.Option(help=".npz array holding the inputs.")]
LabelKey = Annotated[str | None, typer.Option(help=".npz array holding the labels.")]
ImageSize = Annotated[
    str | None, typer.Option(help="Resize images to HxW (default: the model's input size).")
]
OutputName = Annotated[
    str | None, typer.Option("--output-name", help="Classifier output (default: auto).")
]
Embedding = Annotated[
    str,
    typer.Option(help="Embedding tensor: a name, 'auto' (penultimate layer) or 'none'."),
]
Classes = Annotated[str | None, typer.Option(help="Class names in output order, comma-separated.")]
BatchSize = Annotated[int, typer.Option(help="Rows per onnxruntime run.")]
ChunkSize = Annotated[int, typer.Option(help="Rows read at a time.")]
Threads = Annotated[int | None, typer.Option(help="onnxruntime intra-op threads.")]
Optimize = Annotated[
    bool, typer.Option(help="Run through graphopt's optimized (and checked) graph.")
]
RayAddress = Annotated[
    str | None,
    typer.Option("--ray", help="Run inference on Ray: 'local', 'auto' or a cluster address."),
]
Progress = Annotated[bool, typer.Option(help="Show a progress bar.")]
Seed = Annotated[int | None, typer.Option(help="Seed of the dropout masks (reproducible).")]


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _image_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise LabelDataError(f"image size {text!r} is not HxW (e.g. 28x28)") from None
    if h < 1 or w < 1:
        raise LabelDataError(f"image size {text!r} must be positive")
    return h, w


def _dataset(data: Path, *, columns, label_column, id_column, key, label_key, image_size):
    from optimizer.label.data import open_dataset

    return open_dataset(
        data,
        columns=_split(columns),
        label_column=label_column,
        id_column=id_column,
        key=key,
        label_key=label_key,
        image_size=_image_size(image_size),
    )


def _model(model: Path | None, *, output_name, embedding, classes, optimize, threads, ray):
    from optimizer.label.inference import LabelModel

    if model is None:
        raise LabelDataError("no model given: pass -m MODEL.onnx")
    labeller = LabelModel(
        model,
        output=output_name,
        embedding=None if embedding == "none" else embedding,
        class_names=_split(classes),
        optimize=optimize,
        threads=threads,
    )
    if ray is not None:
        labeller.use_ray(ray)
    return labeller


def _class_name(names, k: int) -> str:
    return str(names[k]) if names is not None else str(int(k))


def _finish(title: str, summary: dict[str, Any], data: dict[str, Any], output: Path | None) -> None:
    """Write the table (when asked), then print the summary and a preview."""
    if output is not None:
        report.write_table(output, data, summary=summary)
        summary = {**summary, "written": str(output)}
    out.print(report.summary_table(title, summary))
    if output is None:
        out.print(report.preview_table("first rows", data))


def _probability_columns(probs: np.ndarray, names) -> dict[str, np.ndarray]:
    return {f"p_{_class_name(names, k)}": probs[:, k] for k in range(probs.shape[1])}


# ---------------------------------------------------------------- predict


@app.command()
def predict(
    data: Data,
    model: ModelOpt = None,
    output: OutOpt = None,
    embeddings_out: Annotated[
        Path | None, typer.Option("--embeddings", help="Save the embeddings here (.npy).")
    ] = None,
    embedding: Embedding = "auto",
    output_name: OutputName = None,
    classes: Classes = None,
    columns: Columns = None,
    label_column: LabelColumn = None,
    id_column: IdColumn = None,
    key: Key = None,
    label_key: LabelKey = None,
    image_size: ImageSize = None,
    batch_size: BatchSize = 256,
    chunk_size: ChunkSize = 4096,
    threads: Threads = None,
    optimize: Optimize = True,
    ray: RayAddress = None,
    progress: Progress = True,
) -> None:
    """Predicted labels, confidences, class probabilities (and embeddings) for every row."""

    def action() -> None:
        if output is not None:
            report.check_output_path(output)
        if embeddings_out is not None and embeddings_out.suffix.lower() != ".npy":
            raise LabelDataError(f"{embeddings_out}: embeddings are written as .npy")
        if embeddings_out is not None and embedding == "none":
            raise LabelDataError("--embeddings needs an embedding tensor (not --embedding none)")
        dataset = _dataset(
            data,
            columns=columns,
            label_column=label_column,
            id_column=id_column,
            key=key,
            label_key=label_key,
            image_size=image_size,
        )
        labeller = _model(
            model,
            output_name=output_name,
            embedding=embedding,
            classes=classes,
            optimize=optimize,
            threads=threads,
            ray=ray,
        )
        if embeddings_out is not None and labeller.embedding_name is None:
            raise LabelDataError(f"no embeddings: {labeller.embedding_note}")
        with report.progress_bar(
            dataset.num_rows(), "predicting", console=err, enabled=progress
        ) as advance:
            result = labeller.predict(
                dataset,
                batch_size=batch_size,
                chunk_size=chunk_size,
                embeddings=embeddings_out is not None,
                progress=advance,
            )
        names = labeller.class_names
        columns_out: dict[str, Any] = {
            "id": result.ids,
            "label": [_class_name(names, k) for k in result.labels],
            "confidence": result.confidence,
        }
        if result.given is not None:
            columns_out["given"] = result.given
        columns_out.update(_probability_columns(result.probabilities, names))
        summary: dict[str, Any] = {
            "rows": len(result),
            "classes": result.num_classes,
            "mean confidence": float(result.confidence.mean()),
            "embedding": labeller.embedding_note,
            "graph": "graphopt-optimized, checked" if optimize else "unoptimized",
        }
        if result.given is not None:
            try:
                given = result.given_indices()
                summary["accuracy vs given labels"] = float((given == result.labels).mean())
            except LabelDataError as exc:  # named labels without --classes: still predict
                summary["accuracy vs given labels"] = f"n/a ({exc})"
        if embeddings_out is not None:
            report.save_array(embeddings_out, result.embeddings)
            summary["embeddings"] = f"{embeddings_out} {result.embeddings.shape}"
        _finish("predictions", summary, columns_out, output)

    _guarded(action)


# ---------------------------------------------------------------- uncertainty


@app.command()
def uncertainty(
    data: Data,
    model: ModelOpt = None,
    output: OutOpt = None,
    mc_samples: Annotated[
        int, typer.Option(help="Monte Carlo dropout samples for BALD (0: off).")
    ] = 0,
    seed: Seed = None,
    output_name: OutputName = None,
    classes: Classes = None,
    columns: Columns = None,
    label_column: LabelColumn = None,
    id_column: IdColumn = None,
    key: Key = None,
    label_key: LabelKey = None,
    image_size: ImageSize = None,
    batch_size: BatchSize = 256,
    chunk_size: ChunkSize = 4096,
    threads: Threads = None,
    optimize: Optimize = True,
    ray: RayAddress = None,
    progress: Progress = True,
) -> None:
    """Least confidence, margin and entropy per row (plus BALD with --mc-samples)."""

    def action() -> None:
        from optimizer.label import uncertainty as unc

        if output is not None:
            report.check_output_path(output)
        dataset = _dataset(
            data,
            columns=columns,
            label_column=label_column,
            id_column=id_column,
            key=key,
            label_key=label_key,
            image_size=image_size,
        )
        labeller = _model(
            model,
            output_name=output_name,
            embedding="none",
            classes=classes,
            optimize=optimize,
            threads=threads,
            ray=ray,
        )
        with report.progress_bar(
            dataset.num_rows(), "predicting", console=err, enabled=progress
        ) as advance:
            result = labeller.predict(
                dataset, batch_size=batch_size, chunk_size=chunk_size, progress=advance
            )
        measures = unc.scores(result.probabilities)
        names = labeller.class_names
        table: dict[str, Any] = {
            "id": result.ids,
            "label": [_class_name(names, k) for k in result.labels],
            "confidence": result.confidence,
            **measures,
        }
        summary: dict[str, Any] = {"rows": len(result)}
        for name, values in measures.items():
            summary[f"mean {name}"] = float(values.mean())
        if mc_samples:
            with report.progress_bar(
                dataset.num_rows(), f"{mc_samples} dropout samples", console=err, enabled=progress
            ) as advance:
                mc = labeller.mc_dropout(
                    dataset,
                    samples=mc_samples,
                    seed=seed,
                    batch_size=max(1, batch_size // mc_samples),
                    chunk_size=chunk_size,
                    progress=advance,
                )
            table["bald"] = mc.stats.bald
            table["mc_agreement"] = mc.stats.agreement
            table["mc_label"] = [_class_name(names, k) for k in mc.mean.argmax(axis=1)]
            summary["mean bald"] = float(mc.stats.bald.mean())
            summary["dropout samples"] = f"{mc_samples} per row, drawn in one run per batch"
        _finish("uncertainty", summary, table, output)

    _guarded(action)


# ---------------------------------------------------------------- select


def _read_ids(path: Path) -> list[str]:
    from optimizer.label.data import read_labels

    if path.suffix.lower() in (".csv", ".tsv"):
        import csv

        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        column = "id" if "id" in header else None
        return [str(v) for v in read_labels(path, column)]
    return [str(v) for v in read_labels(path)]


@app.command()
def select(
    data: Data,
    model: ModelOpt = None,
    k: Annotated[int, typer.Option("-k", help="How many rows to choose.")] = 10,
    strategy: Annotated[
        str,
        typer.Option(
            help="least_confidence, margin, entropy, bald, coreset or random.",
        ),
    ] = "margin",
    labeled: Annotated[
        Path | None,
        typer.Option(help="Ids already labelled (.npy, .txt one per line, or .csv 'id')."),
    ] = None,
    mc_samples: Annotated[int, typer.Option(help="Dropout samples for bald.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed (dropout masks, random strategy).")] = 0,
    output: OutOpt = None,
    embedding: Embedding = "auto",
    output_name: OutputName = None,
    classes: Classes = None,
    columns: Columns = None,
    id_column: IdColumn = None,
    key: Key = None,
    image_size: ImageSize = None,
    batch_size: BatchSize = 256,
    chunk_size: ChunkSize = 4096,
    threads: Threads = None,
    optimize: Optimize = True,
    ray: RayAddress = None,
    progress: Progress = True,
) -> None:
    """Choose the next k rows to label, ranked, each with its score and the reason."""

    def action() -> None:
        from optimizer.label.active import STRATEGIES
        from optimizer.label.active import select as choose

        if strategy not in STRATEGIES:
            raise LabelDataError(
                f"unknown strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}"
            )
        if output is not None:
            report.check_output_path(output)
        dataset = _dataset(
            data,
            columns=columns,
            label_column=None,
            id_column=id_column,
            key=key,
            label_key="" if key is not None else None,
            image_size=image_size,
        )
        labeller = _model(
            model,
            output_name=output_name,
            embedding=embedding if strategy == "coreset" else "none",
            classes=classes,
            optimize=optimize,
            threads=threads,
            ray=ray,
        )
        if strategy == "coreset" and labeller.embedding_name is None:
            raise LabelDataError(
                f"the coreset strategy needs embeddings: {labeller.embedding_note}"
            )
        kwargs: dict[str, Any] = {}
        with report.progress_bar(
            dataset.num_rows(), "scoring", console=err, enabled=progress
        ) as advance:
            if strategy == "bald":
                mc = labeller.mc_dropout(
                    dataset,
                    samples=mc_samples,
                    seed=seed,
                    batch_size=max(1, batch_size // mc_samples),
                    chunk_size=chunk_size,
                    progress=advance,
                )
                ids = mc.ids
                kwargs.update(bald_scores=mc.stats.bald, agreement=mc.stats.agreement)
                kwargs["probs"] = mc.mean
            else:
                pred = labeller.predict(
                    dataset,
                    batch_size=batch_size,
                    chunk_size=chunk_size,
                    embeddings=strategy == "coreset",
                    progress=advance,
                )
                ids = pred.ids
                kwargs["probs"] = pred.probabilities
                kwargs["embeddings"] = pred.embeddings
        positions = None
        if labeled is not None:
            wanted = set(_read_ids(labeled))
            known = {str(i): p for p, i in enumerate(ids)}
            unknown = sorted(wanted - set(known))
            if unknown:
                raise LabelDataError(
                    f"{labeled}: id {unknown[0]!r} is not in the dataset "
                    f"({len(unknown)} unknown id(s))"
                )
            positions = np.array(sorted(known[i] for i in wanted), dtype=np.int64)
        selection = choose(
            k,
            strategy,
            labeled=positions,
            ids=ids,
            class_names=labeller.class_names,
            seed=seed,
            **kwargs,
        )
        table = {
            "rank": [c.rank for c in selection.choices],
            "id": [c.id for c in selection.choices],
            "score": [c.score for c in selection.choices],
            "reason": [c.reason for c in selection.choices],
        }
        summary = {
            "strategy": strategy,
            "pool": len(ids) - (0 if positions is None else len(positions)),
            "chosen": len(selection),
        }
        if output is not None:
            report.write_table(output, table, summary=summary)
            summary["written"] = str(output)
        out.print(report.summary_table("selection", summary))
        out.print(report.preview_table("next to label", table, limit=max(10, k)))

    _guarded(action)


# ---------------------------------------------------------------- errors


def _load_probs(path: Path) -> np.ndarray:
    if not path.is_file():
        raise LabelDataError(f"{path}: no such file")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise LabelDataError(f"{path}: not a readable .npy array ({exc})") from exc


@app.command()
def errors(
    data: Annotated[
        Path | None,
        typer.Argument(help="Dataset the model predicts on (not needed with --probs)."),
    ] = None,
    model: ModelOpt = None,
    probs: Annotated[
        Path | None,
        typer.Option(help="Out-of-fold class probabilities (.npy, N x C) instead of a model."),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Given labels (.npy, .csv, or .txt one per line).")
    ] = None,
    label_column: LabelColumn = None,
    method: Annotated[
        str,
        typer.Option(
            help="prune_by_noise_rate, prune_by_class, both, confident_learning or argmax."
        ),
    ] = "prune_by_noise_rate",
    score: Annotated[
        str,
        typer.Option(help="self_confidence, normalized_margin or confidence_weighted_entropy."),
    ] = "self_confidence",
    all_rows: Annotated[
        bool, typer.Option("--all", help="Write every row, not only the flagged ones.")
    ] = False,
    output: OutOpt = None,
    output_name: OutputName = None,
    classes: Classes = None,
    columns: Columns = None,
    id_column: IdColumn = None,
    key: Key = None,
    label_key: LabelKey = None,
    image_size: ImageSize = None,
    batch_size: BatchSize = 256,
    chunk_size: ChunkSize = 4096,
    threads: Threads = None,
    optimize: Optimize = True,
    ray: RayAddress = None,
    progress: Progress = True,
) -> None:
    """Likely mislabeled rows by confident learning, ranked by label quality (worst first)."""

    def action() -> None:
        from optimizer.label.confident import find_label_issues
        from optimizer.label.data import encode_labels, read_labels

        if output is not None:
            report.check_output_path(output)
        if (model is None) == (probs is None):
            raise LabelDataError("give either -m MODEL (with DATA) or --probs P.npy")
        names = _split(classes)
        note = "out-of-fold probabilities from --probs"
        if probs is not None:
            p = _load_probs(probs)
            if labels is None:
                raise LabelDataError("--probs needs --labels")
            raw = read_labels(labels)
            ids = np.arange(len(raw))
        else:
            if data is None:
                raise LabelDataError("a model needs a DATA argument to predict on")
            dataset = _dataset(
                data,
                columns=columns,
                label_column=label_column,
                id_column=id_column,
                key=key,
                label_key=label_key,
                image_size=image_size,
            )
            labeller = _model(
                model,
                output_name=output_name,
                embedding="none",
                classes=classes,
                optimize=optimize,
                threads=threads,
                ray=ray,
            )
            names = list(labeller.class_names) if labeller.class_names else names
            with report.progress_bar(
                dataset.num_rows(), "predicting", console=err, enabled=progress
            ) as advance:
                pred = labeller.predict(
                    dataset, batch_size=batch_size, chunk_size=chunk_size, progress=advance
                )
            p, ids = pred.probabilities, pred.ids
            if labels is not None:
                raw = read_labels(labels)
            elif pred.given is not None:
                raw = pred.given
            else:
                raise LabelDataError(
                    "no given labels: pass --labels FILE or the dataset's label column"
                )
            note = "the model's probabilities (in-sample if it was trained on these labels)"
        if len(raw) != len(p):
            raise LabelDataError(f"{len(raw)} labels for {len(p)} rows of probabilities")
        given = encode_labels(raw, p.shape[1], names)
        issues = find_label_issues(given, p, method=method, score=score)
        rows = np.arange(len(given)) if all_rows else issues.ranked
        if all_rows:
            rows = rows[np.argsort(issues.quality[rows], kind="stable")]
        table = {
            "id": ids[rows],
            "given": [_class_name(names, k) for k in given[rows]],
            "suggested": [_class_name(names, k) for k in issues.suggested[rows]],
            "label_quality": issues.quality[rows],
            "p_given": p[rows, given[rows]],
            "p_suggested": p[rows, issues.suggested[rows]],
            "issue": issues.mask[rows],
        }
        summary = {
            "rows": len(given),
            "flagged": issues.num_issues,
            "estimated noise rate": issues.estimated_noise_rate,
            "method": method,
            "ranked by": score,
            "probabilities": note,
        }
        _finish("label errors", summary, table, output)

    _guarded(action)


# ---------------------------------------------------------------- crowd


@app.command()
def crowd(
    records: Annotated[Path, typer.Argument(help="CSV of (item, annotator, label) records.")],
    method: Annotated[
        str, typer.Option(help="dawid_skene, mace, majority_vote, or all (compare them).")
    ] = "dawid_skene",
    item_column: Annotated[
        str | None, typer.Option(help="Item column (default item/task).")
    ] = None,
    annotator_column: Annotated[
        str | None, typer.Option(help="Annotator column (default annotator/worker).")
    ] = None,
    label_column: Annotated[
        str | None, typer.Option(help="Label column (default label/answer).")
    ] = None,
    classes: Classes = None,
    model: Annotated[
        Path | None,
        typer.Option("-m", "--model", help="Add this model as one more annotator (needs --data)."),
    ] = None,
    model_data: Annotated[
        Path | None,
        typer.Option("--data", help="Dataset whose ids are the items, for --model."),
    ] = None,
    columns: Columns = None,
    id_column: IdColumn = None,
    key: Key = None,
    image_size: ImageSize = None,
    output: OutOpt = None,
    skills_out: Annotated[
        Path | None, typer.Option("--skills", help="Write annotator skills (.csv or .json).")
    ] = None,
    threads: Threads = None,
    optimize: Optimize = True,
    ray: RayAddress = None,
    progress: Progress = True,
) -> None:
    """Aggregate crowd labels: one label per item with its confidence, and annotator skills."""

    def action() -> None:
        from optimizer.label.crowd import METHODS, CrowdLabels, aggregate

        methods = list(METHODS) if method == "all" else [method]
        if any(m not in METHODS for m in methods):
            raise LabelDataError(
                f"unknown method {method!r}: expected one of {', '.join(METHODS)} or all"
            )
        for path in (output, skills_out):
            if path is not None:
                report.check_output_path(path)
        names = _split(classes)
        labeller = None
        if model is not None:
            if model_data is None:
                raise LabelDataError("--model needs --data (the items' inputs)")
            # The model's output order defines the classes: crowd labels are read against it.
            labeller = _model(
                model,
                output_name=None,
                embedding="none",
                classes=classes,
                optimize=optimize,
                threads=threads,
                ray=ray,
            )
        crowd_labels = CrowdLabels.read_csv(
            records,
            item_column=item_column,
            annotator_column=annotator_column,
            label_column=label_column,
            class_names=names,
            num_classes=None if labeller is None else labeller.num_classes,
        )
        if labeller is not None:
            dataset = _dataset(
                model_data,
                columns=columns,
                label_column=None,
                id_column=id_column,
                key=key,
                label_key="" if key is not None else None,
                image_size=image_size,
            )
            with report.progress_bar(
                dataset.num_rows(), "model votes", console=err, enabled=progress
            ) as advance:
                pred = labeller.predict(dataset, embeddings=False, progress=advance)
            if pred.num_classes != crowd_labels.num_classes:
                raise LabelDataError(
                    f"the model has {pred.num_classes} classes, the records "
                    f"{crowd_labels.num_classes}: give --classes in the model's output order"
                )
            crowd_labels = crowd_labels.with_annotator(
                "model", [str(i) for i in pred.ids], pred.labels
            )
        results = {m: aggregate(crowd_labels, m) for m in methods}
        main = results[methods[0]]
        item_table: dict[str, Any] = {
            "item": list(crowd_labels.item_names),
            "label": main.label_names(),
            "confidence": main.confidences,
        }
        for name, res in list(results.items())[1:]:
            item_table[f"label_{name}"] = res.label_names()
        skills_table: dict[str, Any] = {"annotator": list(crowd_labels.annotator_names)}
        counts = np.bincount(crowd_labels.annotators, minlength=crowd_labels.num_annotators)
        skills_table["labels"] = counts
        for name, res in results.items():
            skills_table[f"skill_{name}"] = res.skills
        summary: dict[str, Any] = {
            "records": len(crowd_labels),
            "items": crowd_labels.num_items,
            "annotators": crowd_labels.num_annotators,
            "classes": crowd_labels.num_classes,
            "method": methods[0],
            "mean confidence": float(main.confidences.mean()),
        }
        if len(results) > 1:
            for name, res in list(results.items())[1:]:
                summary[f"agreement with {name}"] = float((res.labels == main.labels).mean())
        if main.iterations:
            summary["EM iterations"] = (
                f"{main.iterations} ({'converged' if main.converged else 'not converged'})"
            )
        if skills_out is not None:
            report.write_table(skills_out, skills_table)
            summary["skills written"] = str(skills_out)
        _finish("crowd labels", summary, item_table, output)
        order = np.argsort(-main.skills)
        preview = {k: np.asarray(v)[order] for k, v in skills_table.items()}
        out.print(report.preview_table("annotators (most skilled first)", preview))

    _guarded(action)
