"""Batch inference through graphopt's optimized graph: labels, probabilities, embeddings and
Monte Carlo dropout samples, streamed chunk by chunk.

:class:`LabelModel` imports an ONNX classifier into the IR and prepares two graphs:

- the *prediction graph*: every Dropout off, the classifier output plus (optionally) an
  embedding tensor exposed as a second output (:mod:`optimizer.label.passes`), optimized by
  :func:`optimizer.api.optimize`, which checks it numerically against the unoptimized graph
  on onnxruntime before it is used;
- the *Monte Carlo graph*: every Dropout on, the batch tiled T times inside the graph, so one
  ``session.run`` draws T samples of every item; optimized by the same IR passes
  (:func:`optimizer.passes.run_passes`, IR-checked after each pass). A numeric comparison is
  meaningless for a random graph, so this one is not compared.

Both run on onnxruntime; the Monte Carlo session disables onnxruntime's ``EliminateDropout``
rewrite, which would otherwise delete the Dropouts even in training mode.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnx
import onnxruntime as ort

from optimizer import onnx_io, runtime
from optimizer.api import optimize
from optimizer.errors import GraphoptError
from optimizer.ir import Graph, TensorType, Value
from optimizer.label import passes
from optimizer.label.data import DEFAULT_CHUNK_ROWS, Chunk, Dataset, encode_labels, open_dataset
from optimizer.label.exceptions import LabelDataError, LabelModelError
from optimizer.label.uncertainty import MCStatistics, mc_statistics
from optimizer.passes import run_passes

#: Name of the output that carries the embedding in the prediction graph.
EMBEDDING_OUTPUT = "graphopt_label_embedding"
#: onnxruntime rewrites that must not run on the Monte Carlo graph.
MC_DISABLED_ORT_OPTIMIZERS = ("EliminateDropout",)
ACTIVATIONS = ("auto", "softmax", "sigmoid", "exp", "none")
DEFAULT_BATCH = 256


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def to_probabilities(raw: np.ndarray, activation: str) -> np.ndarray:
    """Class probabilities (float64, rows summing to 1) from a classifier output.

    ``softmax``: logits; ``exp``: log-probabilities (LogSoftmax); ``sigmoid``: one logit of the
    positive class per row (N x 1) or independent per-class logits (normalised); ``none``:
    already probabilities (renormalised against rounding).
    """
    raw = np.asarray(raw, dtype=np.float64)
    if activation == "softmax":
        return softmax(raw)
    if activation == "exp":
        return softmax(raw)  # softmax of log-probabilities is exp, renormalised
    if activation == "sigmoid":
        p = 1.0 / (1.0 + np.exp(-raw))
        if raw.shape[-1] == 1:
            return np.concatenate([1.0 - p, p], axis=-1)
        return p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-300)
    if activation == "none":
        p = np.clip(raw, 0.0, None)
        if raw.shape[-1] == 1:
            return np.concatenate([1.0 - p, p], axis=-1)
        return p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-300)
    raise LabelModelError(f"unknown activation {activation!r}: expected one of {ACTIVATIONS}")


def _activation_of(output: Value, num_outputs: int | None) -> str:
    op = output.node.op if output.node.domain in ("", "ai.onnx") else ""
    if op == "Softmax":
        return "none"
    if op == "LogSoftmax":
        return "exp"
    if op == "Sigmoid":
        return "sigmoid"
    return "sigmoid" if num_outputs == 1 else "softmax"


@dataclass(frozen=True)
class Predictions:
    """What a model predicts for every row: ids, class probabilities (N x C), embeddings
    (N x D, or None), the given labels as read (or None) and the class names (or None)."""

    ids: np.ndarray
    probabilities: np.ndarray
    embeddings: np.ndarray | None
    given: np.ndarray | None
    class_names: tuple[str, ...] | None

    @property
    def labels(self) -> np.ndarray:
        """Predicted class index per row."""
        return self.probabilities.argmax(axis=1)

    @property
    def confidence(self) -> np.ndarray:
        """Probability of the predicted class per row."""
        return self.probabilities.max(axis=1)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return self.probabilities.shape[1]

    def given_indices(self) -> np.ndarray:
        """The given labels as class indices (raises when there are none or one is unknown)."""
        if self.given is None:
            raise LabelDataError("the dataset has no given labels")
        return encode_labels(self.given, self.num_classes, self.class_names)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class MCDropoutResult:
    """Monte Carlo dropout over a dataset: ids, per-item statistics of the T samples
    (:class:`~optimizer.label.uncertainty.MCStatistics`), the samples themselves (T x N x C)
    when kept, and the given labels as read."""

    ids: np.ndarray
    stats: MCStatistics
    samples: np.ndarray | None
    given: np.ndarray | None
    class_names: tuple[str, ...] | None

    @property
    def mean(self) -> np.ndarray:
        """Mean class probabilities over the samples (N x C)."""
        return self.stats.mean

    def __len__(self) -> int:
        return len(self.ids)


class Engine(Protocol):
    """Runs a prepared model over a stream of input chunks (locally or on Ray)."""

    def run(
        self,
        model: onnx.ModelProto,
        chunks: Iterator[tuple[Chunk, np.ndarray]],
        *,
        input_name: str,
        batch_size: int,
        samples: int = 0,
    ) -> Iterator[tuple[Chunk, list[np.ndarray]]]:
        """Yield each chunk with the model's outputs on its inputs, in order.

        With ``samples`` > 0 the model is a Monte Carlo graph whose outputs stack that many
        copies of the batch (:func:`~optimizer.label.passes.tile_batch`); the engine returns
        them item-major: ``rows x samples x ...``.
        """
        ...


def make_ort_session(
    model: onnx.ModelProto | bytes,
    *,
    mc: bool,
    device: str = "cpu",
    options: runtime.SessionOptionsSpec | None = None,
) -> ort.InferenceSession:
    """An onnxruntime session for a prepared model; Monte Carlo sessions keep their Dropouts."""
    options = options or runtime.SessionOptionsSpec()
    data = model if isinstance(model, bytes) else model.SerializeToString()
    disabled = list(MC_DISABLED_ORT_OPTIMIZERS) if mc else None
    try:
        return ort.InferenceSession(
            data,
            options.to_ort(),
            providers=runtime.providers_for(device),
            disabled_optimizers=disabled,
        )
    except GraphoptError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types; report one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LabelModelError(f"onnxruntime cannot load the prepared model: {first}") from exc


class LocalEngine:
    """Runs on this machine: one onnxruntime session per prepared model, batch by batch."""

    def __init__(
        self, *, device: str = "cpu", options: runtime.SessionOptionsSpec | None = None
    ) -> None:
        self.device = device
        self.options = options
        self.session_runs = 0  # how many session.run calls were made (tests read it)
        self._sessions: dict[int, ort.InferenceSession] = {}

    def session(self, model: onnx.ModelProto, *, mc: bool) -> ort.InferenceSession:
        """The (cached) session of a prepared model."""
        key = id(model)
        if key not in self._sessions:
            self._sessions[key] = make_ort_session(
                model, mc=mc, device=self.device, options=self.options
            )
        return self._sessions[key]

    def run(self, model, chunks, *, input_name, batch_size, samples=0):
        session = self.session(model, mc=samples > 0)
        for chunk, x in chunks:
            parts: list[list[np.ndarray]] = []
            for start in range(0, len(x), batch_size):
                batch = x[start : start + batch_size]
                try:
                    outs = run_batch(session, input_name, batch, samples)
                except GraphoptError:
                    raise
                except Exception as exc:  # noqa: BLE001 - one line for every ORT failure
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise LabelModelError(f"onnxruntime failed on a batch: {first}") from exc
                self.session_runs += 1
                parts.append(outs)
            yield chunk, [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]


def run_batch(
    session: ort.InferenceSession, input_name: str, x: np.ndarray, samples: int = 0
) -> list[np.ndarray]:
    """One ``session.run`` on the rows ``x``; Monte Carlo outputs come back item-major.

    A model with a static batch size gets a short (last) batch padded with copies of its
    last row, and the padding is cut from the outputs.
    """
    static = session.get_inputs()[0].shape[0]
    rows = len(x)
    if isinstance(static, int) and static > 0 and rows != static:
        if rows > static:
            raise LabelModelError(f"batch of {rows} rows for a model fixed to {static}")
        x = np.concatenate([x, np.repeat(x[-1:], static - rows, axis=0)])
    outs = session.run(None, {input_name: x})
    return [item_major(o, len(x), samples)[:rows] for o in outs]


def item_major(output: np.ndarray, rows: int, samples: int) -> np.ndarray:
    """A Monte Carlo output (``samples`` stacked copies of a batch of ``rows``, sample-major)
    as ``rows x samples x ...``; other outputs unchanged."""
    if samples <= 0:
        return output
    if len(output) != rows * samples:
        raise LabelModelError(
            f"the Monte Carlo graph returned {len(output)} rows for {rows} items x {samples} "
            "samples"
        )
    return output.reshape(samples, rows, *output.shape[1:]).swapaxes(0, 1)


class LabelModel:
    """An ONNX classifier prepared for labelling (see the module docstring).

    - ``model``: a path or an :class:`onnx.ModelProto` with one input (rows along axis 0).
    - ``output``: the classifier output's name (default: the first float output of rank 2).
    - ``embedding``: ``"auto"`` (the penultimate layer, see
      :func:`~optimizer.label.passes.find_penultimate`; none when it cannot be found), a
      tensor name, or None.
    - ``activation``: how outputs become probabilities (``auto`` reads the graph: Softmax
      outputs are used as they are, LogSoftmax exponentiated, Sigmoid made binary, anything
      else is taken for logits).
    - ``class_names``: names of the classes in output order (for named labels and reports).
    - ``optimize``/``check``: run graphopt's passes, and check the prediction graph
      numerically against the unoptimized one.
    - ``device``/``threads``: onnxruntime placement and intra-op threads.
    """

    def __init__(
        self,
        model: onnx.ModelProto | str | os.PathLike,
        *,
        output: str | None = None,
        embedding: str | None = "auto",
        activation: str = "auto",
        class_names: Sequence[str] | None = None,
        optimize: bool = True,
        check: bool = True,
        device: str = "cpu",
        threads: int | None = None,
        session_options: runtime.SessionOptionsSpec | None = None,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise LabelModelError(
                f"unknown activation {activation!r}: expected one of {ACTIVATIONS}"
            )
        if isinstance(model, onnx.ModelProto):
            self.graph, _ = onnx_io.import_model(model, None)
        else:
            self.graph, _ = onnx_io.load(model)
        self.optimize = optimize
        self.check = check
        self.device = device
        options = session_options or runtime.SessionOptionsSpec(intra_op_threads=threads)
        self.engine: Engine = LocalEngine(device=device, options=options)
        self._input = self._pick_input()
        self.output_name, self._output = self._pick_output(output)
        shape = self._output.type.shape if isinstance(self._output.type, TensorType) else None
        self._declared_classes = shape[1] if shape and isinstance(shape[1], int) else None
        self.activation = (
            _activation_of(self._output, self._declared_classes)
            if activation == "auto"
            else activation
        )
        self.embedding_name, self._embedding, self.embedding_note = self._pick_embedding(embedding)
        self.class_names = None if class_names is None else tuple(str(c) for c in class_names)
        if self.class_names is not None and self._declared_classes is not None:
            expected = self._classes_from_width(self._declared_classes)
            if len(self.class_names) != expected:
                raise LabelModelError(
                    f"{len(self.class_names)} class names given, the model has {expected} classes"
                )
        self._prepared: dict[Any, onnx.ModelProto] = {}

    # ------------------------------------------------------------------ model description

    def _pick_input(self) -> Value:
        inputs = [v for v in self.graph.inputs if v.node.attr("default") is None]
        if len(inputs) != 1:
            names = ", ".join(v.input_name for v in inputs) or "none"
            raise LabelModelError(
                f"the labeller needs a model with exactly one input, this one has {len(inputs)} "
                f"({names})"
            )
        t = inputs[0].type
        if not isinstance(t, TensorType) or t.shape is None or len(t.shape) < 1:
            raise LabelModelError(
                f"input '{inputs[0].input_name}' must be a tensor with a batch axis, got {t}"
            )
        return inputs[0]

    @property
    def input_name(self) -> str:
        """Name of the model's input."""
        return self._input.input_name

    @property
    def sample_shape(self) -> tuple[int | str | None, ...]:
        """Shape of one row of input (the input's shape without its batch axis)."""
        return tuple(self._input.type.shape[1:])  # type: ignore[union-attr]

    @property
    def input_dtype(self) -> np.dtype:
        """numpy dtype of the input."""
        return self._input.type.dtype.to_numpy()  # type: ignore[union-attr]

    def _pick_output(self, name: str | None) -> tuple[str, Value]:
        pairs = list(zip(self.graph.output_names, self.graph.outputs))
        if name is not None:
            for out_name, value in pairs:
                if out_name == name:
                    return out_name, value
            raise LabelModelError(
                f"the model has no output {name!r} (outputs: {', '.join(n for n, _ in pairs)})"
            )
        for out_name, value in pairs:
            t = value.type
            if isinstance(t, TensorType) and t.dtype.is_float and t.rank == 2:
                return out_name, value
        raise LabelModelError(
            "no classifier output (a float tensor of shape [batch, classes]) among the model's "
            f"outputs ({', '.join(n for n, _ in pairs)}); name one"
        )

    def _pick_embedding(self, embedding: str | None) -> tuple[str | None, Value | None, str]:
        if embedding is None:
            return None, None, "embeddings off"
        if embedding == "auto":
            try:
                value = passes.find_penultimate(self.graph, self._output)
            except LabelModelError as exc:
                return None, None, str(exc)
            name = passes.name_of(self.graph, value) or "(unnamed)"
            return name, value, f"penultimate layer '{name}' (found automatically)"
        value = passes.value_by_name(self.graph, embedding)
        if value is self._output:
            raise LabelModelError(f"'{embedding}' is the classifier output, not an embedding")
        return embedding, value, f"tensor '{embedding}' (named)"

    def _classes_from_width(self, width: int) -> int:
        return 2 if width == 1 and self.activation in ("sigmoid", "none") else width

    @property
    def num_classes(self) -> int | None:
        """Number of classes when the output's shape declares it (else known after a run)."""
        if self._declared_classes is None:
            return None if self.class_names is None else len(self.class_names)
        return self._classes_from_width(self._declared_classes)

    @property
    def num_dropouts(self) -> int:
        """Number of Dropout nodes (Monte Carlo dropout needs at least one)."""
        return passes.count_dropouts(self.graph)

    # ------------------------------------------------------------------ prepared graphs

    def prediction_graph(self) -> Graph:
        """The unoptimized prediction graph: Dropouts off, classifier output (+ embedding)."""
        g = self.graph.with_outputs([self._output], output_names=(self.output_name,))
        if self._embedding is not None:
            g = passes.expose_value(g, self._embedding, EMBEDDING_OUTPUT)
        return passes.set_dropout_training(g, False)

    def prediction_model(self) -> onnx.ModelProto:
        """The prediction graph as optimized and checked (cached)."""
        key = "predict"
        if key not in self._prepared:
            reference = onnx_io.to_proto(self.prediction_graph())
            if self.optimize:
                self._prepared[key] = optimize(reference, check=self.check, device=self.device)
            else:
                self._prepared[key] = reference
        return self._prepared[key]

    def mc_model(
        self, samples: int, *, seed: int | None = None, ratio: float | None = None
    ) -> onnx.ModelProto:
        """The Monte Carlo graph drawing ``samples`` samples per run (cached per settings)."""
        if samples < 2:
            raise LabelModelError(f"Monte Carlo dropout needs at least 2 samples, got {samples}")
        if self.num_dropouts == 0:
            raise LabelModelError(
                "the model has no Dropout node, so Monte Carlo dropout cannot sample it "
                "(export it with its Dropout layers kept, e.g. torch.onnx.export of the "
                "module in train() mode when it has no BatchNorm)"
            )
        key = ("mc", samples, seed, ratio)
        if key not in self._prepared:
            g = self.graph.with_outputs([self._output], output_names=(self.output_name,))
            g = passes.set_dropout_training(g, True, seed=seed, ratio=ratio)
            g = passes.tile_batch(g, samples)
            if self.optimize:
                g, _ = run_passes(g)
            else:
                g.check()
            self._prepared[key] = onnx_io.to_proto(g)
        return self._prepared[key]

    # ------------------------------------------------------------------ running

    def _inputs(
        self, dataset: Dataset, chunk_size: int, progress: Any
    ) -> Iterator[tuple[Chunk, np.ndarray]]:
        """Chunks with their inputs cast and checked against the model's input."""
        dataset.adapt(self.sample_shape)
        if progress is True:  # a rich progress bar on stderr, for interactive use
            from rich.console import Console

            from optimizer.label.report import progress_bar

            bar = progress_bar(dataset.num_rows(), "labelling", console=Console(stderr=True))
            with bar as advance:
                yield from self._inputs(dataset, chunk_size, advance)
            return
        rows = 0
        for chunk in dataset.chunks(chunk_size):
            x = chunk.x
            if x.dtype.kind not in "biuf":
                raise LabelDataError(
                    f"{dataset.name}: inputs are of type {x.dtype}, the model takes numbers"
                )
            self._check_shape(dataset, x)
            rows += len(chunk)
            yield chunk, np.ascontiguousarray(x, dtype=self.input_dtype)
            if callable(progress):
                progress(len(chunk))
        if rows == 0:
            raise LabelDataError(f"{dataset.name}: the dataset is empty")

    def _check_shape(self, dataset: Dataset, x: np.ndarray) -> None:
        want = self.sample_shape
        got = x.shape[1:]
        ok = len(got) == len(want) and all(
            not isinstance(w, int) or w == g for g, w in zip(got, want)
        )
        if not ok:
            shown = "(" + ", ".join("?" if not isinstance(w, int) else str(w) for w in want) + ")"
            raise LabelDataError(
                f"{dataset.name}: rows have shape {tuple(got)}, the model's input "
                f"'{self.input_name}' takes rows of shape {shown}"
            )

    def _batch_size(self, batch_size: int) -> int:
        if batch_size < 1:
            raise LabelDataError(f"batch size must be at least 1, got {batch_size}")
        first = self._input.type.shape[0]  # type: ignore[index]
        return first if isinstance(first, int) else batch_size

    def _probabilities(self, raw: np.ndarray) -> np.ndarray:
        if raw.ndim != 2:
            raise LabelModelError(
                f"output '{self.output_name}' has shape {raw.shape}, expected [batch, classes]"
            )
        probs = to_probabilities(raw, self.activation)
        if self.class_names is not None and len(self.class_names) != probs.shape[1]:
            raise LabelModelError(
                f"{len(self.class_names)} class names given, the model has {probs.shape[1]} classes"
            )
        return probs

    def iter_predict(
        self,
        data: Any,
        *,
        batch_size: int = DEFAULT_BATCH,
        chunk_size: int = DEFAULT_CHUNK_ROWS,
        embeddings: bool = True,
        progress: Any = None,
    ) -> Iterator[Predictions]:
        """Predictions chunk by chunk (see :meth:`predict`); memory stays bounded by a chunk."""
        dataset = open_dataset(data)
        model = self.prediction_model()
        batch = self._batch_size(batch_size)
        stream = self._inputs(dataset, chunk_size, progress)
        for chunk, outs in self.engine.run(
            model, stream, input_name=self.input_name, batch_size=batch
        ):
            emb = None
            if embeddings and self._embedding is not None:
                emb = outs[1].reshape(len(chunk), -1)
            yield Predictions(
                chunk.ids, self._probabilities(outs[0]), emb, chunk.labels, self.class_names
            )

    def predict(
        self,
        data: Any,
        *,
        batch_size: int = DEFAULT_BATCH,
        chunk_size: int = DEFAULT_CHUNK_ROWS,
        embeddings: bool = True,
        progress: Any = None,
    ) -> Predictions:
        """Predicted labels, class probabilities and embeddings of every row of ``data``.

        ``data`` is anything :func:`~optimizer.label.data.open_dataset` reads. Rows stream in
        chunks of ``chunk_size`` and run in batches of ``batch_size``. ``progress=True`` shows
        a progress bar; a callable ``progress(n)`` is called after each chunk of n rows.
        Embeddings are flattened to N x D.
        """
        parts = list(
            self.iter_predict(
                data,
                batch_size=batch_size,
                chunk_size=chunk_size,
                embeddings=embeddings,
                progress=progress,
            )
        )
        return _join_predictions(parts)

    def mc_dropout(
        self,
        data: Any,
        *,
        samples: int = 20,
        seed: int | None = None,
        ratio: float | None = None,
        batch_size: int = 64,
        chunk_size: int = DEFAULT_CHUNK_ROWS,
        keep_samples: bool = False,
        progress: Any = None,
    ) -> MCDropoutResult:
        """Monte Carlo dropout: ``samples`` stochastic predictions of every row.

        Each run feeds ``batch_size`` rows and the graph tiles them ``samples`` times, so one
        ``session.run`` yields every sample of those rows. ``seed`` makes the draws
        reproducible (per Dropout node, ONNX's ``seed`` attribute); ``ratio`` overrides the
        drop probability. Keeps the T x N x C samples only when ``keep_samples``.
        """
        dataset = open_dataset(data)
        model = self.mc_model(samples, seed=seed, ratio=ratio)
        batch = self._batch_size(batch_size)
        stream = self._inputs(dataset, chunk_size, progress)
        ids, given, stats, kept = [], [], [], []
        for chunk, outs in self.engine.run(
            model, stream, input_name=self.input_name, batch_size=batch, samples=samples
        ):
            sampled = outs[0]  # rows x samples x C
            probs = self._probabilities(sampled.reshape(-1, sampled.shape[-1]))
            probs = probs.reshape(len(chunk), samples, -1).swapaxes(0, 1)
            ids.append(chunk.ids)
            given.append(chunk.labels)
            stats.append(mc_statistics(probs))
            if keep_samples:
                kept.append(probs)
        return MCDropoutResult(
            np.concatenate(ids),
            MCStatistics.concatenate(stats),
            np.concatenate(kept, axis=1) if keep_samples else None,
            None if given[0] is None else np.concatenate(given),
            self.class_names,
        )

    def use_ray(self, address: str, **kwargs: Any) -> LabelModel:
        """Run the inference steps on a Ray cluster from now on (see
        :class:`optimizer.label.ray_backend.RayEngine`; ``address``: "local", "auto" or a
        cluster address). Returns ``self``."""
        from optimizer.label.ray_backend import RayEngine

        options = getattr(self.engine, "options", None)
        self.engine = RayEngine(address, device=self.device, options=options, **kwargs)
        return self


def _join_predictions(parts: list[Predictions]) -> Predictions:
    first = parts[0]
    return Predictions(
        np.concatenate([p.ids for p in parts]),
        np.concatenate([p.probabilities for p in parts]),
        None if first.embeddings is None else np.concatenate([p.embeddings for p in parts]),
        None if first.given is None else np.concatenate([p.given for p in parts]),
        first.class_names,
    )
