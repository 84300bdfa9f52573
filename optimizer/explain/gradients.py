"""Run a model and its VJP graph on onnxruntime, batched: :class:`GradientModel`.

A :class:`GradientModel` wraps one ONNX model, the input that explanations attribute to and
the output they explain. It builds (lazily, once) the forward graph, the VJP graph for the
input, VJP graphs for named layers (Grad-CAM) and masked graphs (perturbation methods), and
holds one onnxruntime session for each. Every attribution method takes a GradientModel, so a
model is imported and its sessions are created once, however many explanations follow.

Targets say which scalar of the output is explained, per example: an int is a flat index into
one example's output (the class for ``[N, C]`` logits), a tuple indexes it, an array gives one
target per example, and None picks each example's argmax. The cotangent fed to the VJP graph
is the one-hot vector of the target, so one run returns ``d output[target] / d input``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx

from optimizer import onnx_io, runtime
from optimizer.explain.autodiff import (
    GradientGraph,
    build_vjp,
    forward_graph,
    resolve_value,
)
from optimizer.explain.errors import ExplainError
from optimizer.explain.graph_edit import MaskedGraph, add_mask_input, cut_at, prune_inputs
from optimizer.ir import Graph, TensorType

ModelLike = onnx.ModelProto | str | os.PathLike | Graph
Target = int | Sequence[int] | np.ndarray | None
#: A callable advanced by the number of examples (or masks) each run completed.
Progress = Callable[[int], None]


def load_graph(model: ModelLike, input_shapes: Mapping[str, Sequence[int]] | None = None) -> Graph:
    """Import ``model`` (ModelProto, path or IR Graph) into the IR."""
    if isinstance(model, Graph):
        return model
    if isinstance(model, onnx.ModelProto):
        return onnx_io.import_model(model, None, input_shapes=input_shapes)[0]
    proto = onnx_io.load_proto(model)
    return onnx_io.import_model(proto, onnx_io.base_dir_of(model), input_shapes=input_shapes)[0]


@dataclass
class VJPResult:
    """One VJP evaluation: the output, the input gradient, and per layer (activation, gradient)."""

    output: np.ndarray
    gradient: np.ndarray | None
    layers: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


class GradientModel:
    """A model ready for gradient and perturbation explanations on onnxruntime.

    - ``input``: the tensor to attribute to: a float graph input, or the name of any float
      intermediate value (then the graph is cut there and that value becomes the input; use
      :meth:`activations` to compute it from the original inputs). Default: the first float
      graph input.
    - ``output``: the model output to explain (default: the first).
    - ``input_shapes``: fix symbolic input dims (``{"x": (1, 3, 224, 224)}``); convolution
      gradients need static spatial sizes.
    - ``options``: onnxruntime session settings; ``device``: "cpu", "cuda" or "auto".
    """

    def __init__(
        self,
        model: ModelLike,
        *,
        input: str | None = None,
        output: str | None = None,
        input_shapes: Mapping[str, Sequence[int]] | None = None,
        options: runtime.SessionOptionsSpec | None = None,
        device: str = "cpu",
    ) -> None:
        self.original = load_graph(model, input_shapes)
        floats = [
            v.input_name
            for v in self.original.inputs
            if isinstance(v.type, TensorType) and v.type.dtype.is_float
        ]
        name = input if input is not None else (floats[0] if floats else None)
        if name is None:
            raise ExplainError(
                "the model has no float input; name a float intermediate (an embedding) to "
                "attribute to"
            )
        self.graph = cut_at(self.original, name)
        self.input = name
        self.output = output if output is not None else self.graph.output_names[0]
        if self.output not in self.graph.output_names:
            raise ExplainError(
                f"no output named {self.output!r} (outputs: {', '.join(self.graph.output_names)})"
            )
        value = next(v for v in self.graph.inputs if v.input_name == name)
        self.input_type: TensorType = value.type  # type: ignore[assignment]
        if not self.input_type.dtype.is_float:
            raise ExplainError(f"input {name!r} is {self.input_type}, not a float tensor")
        batch = (self.input_type.shape or (None,))[0]
        #: The input's batch size when the model fixes it (then runs use exactly that many).
        self.fixed_batch: int | None = batch if isinstance(batch, int) else None
        self.options = options or runtime.SessionOptionsSpec()
        self.device = device
        self._sessions: dict[Any, Any] = {}
        self._vjps: dict[tuple, GradientGraph] = {}
        self._masked: dict[Any, MaskedGraph] = {}

    # -- sessions -------------------------------------------------------------------------

    def _session(self, key: Any, graph: Graph, label: str):
        if key not in self._sessions:
            self._sessions[key] = runtime.make_session(
                onnx_io.to_proto(graph), device=self.device, options=self.options, label=label
            )
        return self._sessions[key]

    def vjp_graph(self, layers: Sequence[str] = (), wrt_input: bool = True) -> GradientGraph:
        """The VJP graph for the input (and/or named layers), built once."""
        key = (tuple(layers), wrt_input)
        if key not in self._vjps:
            self._vjps[key] = build_vjp(
                self.graph,
                [self.input] if wrt_input else [],
                output=self.output,
                intermediates=list(layers),
            )
        return self._vjps[key]

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of the input."""
        return self.input_type.dtype.to_numpy()

    @property
    def example_shape(self) -> tuple:
        """The shape of one example of the input (without the batch axis)."""
        return tuple(self.input_type.shape[1:])  # type: ignore[index]

    def other_inputs(self) -> list[str]:
        """Graph inputs besides the attributed one (fed through ``extra``)."""
        return [v.input_name for v in self.graph.inputs if v.input_name != self.input]

    # -- batching ---------------------------------------------------------------------------

    def _chunks(self, n: int, batch_size: int) -> Iterator[tuple[int, int]]:
        size = self.fixed_batch or max(1, batch_size)
        for start in range(0, n, size):
            yield start, min(n, start + size)

    def _feed(
        self, x: np.ndarray, extra: Mapping[str, np.ndarray] | None, lo: int, hi: int
    ) -> tuple[dict[str, np.ndarray], int]:
        """The feed for examples lo..hi, padded to the fixed batch size when there is one."""
        part = np.ascontiguousarray(x[lo:hi], dtype=self.dtype)
        pad = 0
        if self.fixed_batch and len(part) < self.fixed_batch:
            pad = self.fixed_batch - len(part)
            part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
        feed = {self.input: part}
        for name in self.other_inputs():
            if extra is None or name not in extra:
                raise ExplainError(f"the model also needs input {name!r}: pass it in `extra`")
            arr = np.asarray(extra[name])
            sub = arr[lo:hi]
            if pad:
                sub = np.concatenate([sub, np.repeat(sub[-1:], pad, axis=0)])
            feed[name] = sub
        return feed, pad

    def _check_input(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        shape = self.input_type.shape or ()
        if x.ndim != len(shape):
            raise ExplainError(
                f"input {self.input!r} expects rank {len(shape)} {self.input_type}, got shape "
                f"{x.shape}"
            )
        for axis, (got, want) in enumerate(zip(x.shape[1:], shape[1:]), start=1):
            if isinstance(want, int) and got != want:
                raise ExplainError(
                    f"input {self.input!r}: axis {axis} has size {got}, the model expects "
                    f"{self.input_type}"
                )
        return x

    # -- forward ----------------------------------------------------------------------------

    def predict(
        self,
        x: np.ndarray,
        *,
        extra: Mapping[str, np.ndarray] | None = None,
        batch_size: int = 64,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """The explained output for a batch of inputs (run in chunks of ``batch_size``)."""
        x = self._check_input(x)
        graph = forward_graph(self.graph, self.output)
        session = self._session("forward", graph, "the model")
        parts = []
        for lo, hi in self._chunks(len(x), batch_size):
            feed, pad = self._feed(x, extra, lo, hi)
            out = runtime.run(session, feed, label="the model")[self.output]
            parts.append(out[: len(out) - pad] if pad else out)
            if progress:
                progress(hi - lo)
        return np.concatenate(parts) if parts else np.zeros((0,))

    def activations(
        self, feeds: Mapping[str, np.ndarray], names: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Values of named tensors of the *original* model (default: the attributed input)
        for ``feeds`` of its own inputs; e.g. the embeddings of token ids."""
        names = list(names) if names is not None else [self.input]
        values = [resolve_value(self.original, name) for name in names]
        graph = prune_inputs(
            replace(
                self.original,
                outputs=tuple(values),
                output_names=tuple(names),
                meta=replace(self.original.meta, output_types=()),
            )
        )
        session = self._session(("activations", tuple(names)), graph, "the model")
        wanted = {v.input_name for v in graph.inputs}
        out = runtime.run(
            session, {k: v for k, v in feeds.items() if k in wanted}, label="the model"
        )
        return {n: out[n] for n in names}

    # -- targets ----------------------------------------------------------------------------

    def resolve_targets(
        self, target: Target, n: int, outputs: np.ndarray | None = None
    ) -> np.ndarray:
        """Per-example flat indices into one example's output (see the module docstring).

        ``outputs`` (the model's outputs for the examples) is needed when ``target`` is None.
        """
        if target is None:
            if outputs is None:
                raise ExplainError("target None needs the model's outputs (argmax)")
            return outputs.reshape(n, -1).argmax(axis=1)
        out_shape = self._output_example_shape()
        if isinstance(target, (int, np.integer)):
            flat = np.full(n, int(target))
        elif isinstance(target, tuple):
            if out_shape is None or len(target) != len(out_shape):
                raise ExplainError(f"target {target} does not index one output example")
            flat = np.full(n, int(np.ravel_multi_index(target, out_shape)))  # type: ignore[arg-type]
        else:
            arr = np.asarray(target)
            if arr.ndim == 1 and len(arr) == n:
                flat = arr.astype(np.int64)
            elif arr.ndim == 2 and len(arr) == n and out_shape is not None:
                flat = np.ravel_multi_index(tuple(arr.T), out_shape).astype(np.int64)
            else:
                raise ExplainError(f"targets of shape {arr.shape} for {n} examples")
        size = int(np.prod(out_shape)) if out_shape is not None else None
        if size is not None and (flat.min() < -size or flat.max() >= size):
            raise ExplainError(
                f"target out of range: one output example has {size} entries {out_shape}"
            )
        return flat % size if size is not None else flat

    def _output_example_shape(self) -> tuple[int, ...] | None:
        value = self.graph.outputs[self.graph.output_names.index(self.output)]
        shape = value.type.shape if isinstance(value.type, TensorType) else None
        if shape is None or not all(isinstance(d, int) for d in shape[1:]):
            return None
        return tuple(shape[1:])  # type: ignore[arg-type]

    # -- gradients --------------------------------------------------------------------------

    def vjp(
        self,
        x: np.ndarray,
        cotangent: np.ndarray,
        *,
        extra: Mapping[str, np.ndarray] | None = None,
        layers: Sequence[str] = (),
        wrt_input: bool = True,
    ) -> VJPResult:
        """One VJP run on a batch (no chunking): output, ``J^T cotangent``, layer values."""
        gg = self.vjp_graph(layers, wrt_input)
        session = self._session(("vjp", tuple(layers), wrt_input), gg.graph, "the gradient graph")
        x = self._check_input(x)
        feed, _ = self._feed(x, extra, 0, len(x))
        feed[gg.cotangent] = np.ascontiguousarray(cotangent, dtype=self.dtype)
        out = runtime.run(session, feed, label="the gradient graph")
        return VJPResult(
            out[gg.output],
            out[gg.gradients[self.input]] if wrt_input else None,
            {name: (out[gg.activations[name]], out[gg.gradients[name]]) for name in layers},
        )

    def target_gradients(
        self,
        x: np.ndarray,
        targets: np.ndarray,
        *,
        extra: Mapping[str, np.ndarray] | None = None,
        layers: Sequence[str] = (),
        wrt_input: bool = True,
        batch_size: int = 32,
        progress: Progress | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None, dict[str, tuple[np.ndarray, np.ndarray]]]:
        """Scores ``output[i][targets[i]]``, their input gradients and layer (value, gradient)
        pairs for every example, in chunks of ``batch_size``."""
        x = self._check_input(x)
        targets = np.asarray(targets, dtype=np.int64)
        scores, grads = [], []
        layer_parts: dict[str, tuple[list, list]] = {name: ([], []) for name in layers}
        for lo, hi in self._chunks(len(x), batch_size):
            feed, pad = self._feed(x, extra, lo, hi)
            n = len(feed[self.input])
            example = self._output_example_shape()
            if example is None:  # symbolic output dims: learn them from a forward run
                example = self.predict(feed[self.input][:1], extra=_first(feed, self.input))[
                    0
                ].shape
            cot = np.zeros((n, int(np.prod(example))), dtype=self.dtype)
            picked = np.concatenate([targets[lo:hi], np.repeat(targets[hi - 1 : hi], pad)])
            cot[np.arange(n), picked] = 1
            res = self.vjp(
                feed[self.input],
                cot.reshape((n, *example)),
                extra={k: v for k, v in feed.items() if k != self.input},
                layers=layers,
                wrt_input=wrt_input,
            )
            keep = n - pad
            scores.append(res.output.reshape(n, -1)[np.arange(keep), picked[:keep]])
            if res.gradient is not None:
                grads.append(res.gradient[:keep])
            for name, (act, grad) in res.layers.items():
                layer_parts[name][0].append(act[:keep])
                layer_parts[name][1].append(grad[:keep])
            if progress:
                progress(hi - lo)
        return (
            np.concatenate(scores),
            np.concatenate(grads) if grads else None,
            {k: (np.concatenate(a), np.concatenate(g)) for k, (a, g) in layer_parts.items()},
        )

    # -- masks ------------------------------------------------------------------------------

    def masked(
        self, mask_shape: tuple[int, ...] | None = None, segments: np.ndarray | None = None
    ) -> MaskedGraph:
        """The model with a mask input in front of the attributed input (built once per
        mask layout)."""
        key = ("mask", mask_shape, None if segments is None else np.asarray(segments).tobytes())
        if key not in self._masked:
            graph = forward_graph(self.graph, self.output)
            self._masked[key] = add_mask_input(
                graph, self.input, mask_shape=mask_shape, segments=segments
            )
        return self._masked[key]

    def run_masks(
        self,
        x: np.ndarray,
        baseline: np.ndarray,
        masks: np.ndarray,
        *,
        mask_shape: tuple[int, ...] | None = None,
        segments: np.ndarray | None = None,
        extra: Mapping[str, np.ndarray] | None = None,
        masks_per_run: int = 64,
        progress: Progress | None = None,
    ) -> np.ndarray:
        """Outputs of the model on ``baseline + mask * (x - baseline)`` for every mask.

        ``x`` and ``baseline`` are one example each (leading axis 1); ``masks`` is
        ``[M, *mask_shape]`` (or ``[M, K]`` with ``segments``). The blend happens inside the
        graph; each run evaluates ``masks_per_run`` masks (the model's fixed batch size if it
        has one). Returns ``[M, *output example shape]``.
        """
        mg = self.masked(mask_shape, segments)
        key = ("masked", mask_shape, None if segments is None else segments.tobytes())
        session = self._session(key, mg.graph, "the masked model")
        x = np.asarray(x)
        if len(x) != 1:
            raise ExplainError("run_masks takes one example (leading axis 1)")
        x = self._check_input(x) if not self.fixed_batch else x
        base = np.broadcast_to(np.asarray(baseline, dtype=self.dtype), x.shape)
        size = self.fixed_batch or max(1, masks_per_run)
        if self.fixed_batch:  # a fixed batch dim must be fed in full: repeat the example
            x = np.repeat(x, self.fixed_batch, axis=0)
            base = np.repeat(base, self.fixed_batch, axis=0)
        masks = np.asarray(masks, dtype=self.dtype)
        outs = []
        for lo in range(0, len(masks), size):
            chunk = masks[lo : lo + size]
            pad = size - len(chunk) if self.fixed_batch else 0
            if pad:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
            feed = {self.input: x.astype(self.dtype), mg.mask: chunk, mg.baseline: base.copy()}
            for name in self.other_inputs():
                if extra is None or name not in extra:
                    raise ExplainError(f"the model also needs input {name!r}: pass it in `extra`")
                feed[name] = np.repeat(np.asarray(extra[name])[:1], len(chunk), axis=0)
            out = runtime.run(session, feed, label="the masked model")[self.output]
            outs.append(out[: len(out) - pad] if pad else out)
            if progress:
                progress(len(chunk) - pad)
        return np.concatenate(outs)


def _first(feed: Mapping[str, np.ndarray], skip: str) -> dict[str, np.ndarray]:
    return {k: v[:1] for k, v in feed.items() if k != skip}


def as_gradient_model(model: GradientModel | ModelLike, **kwargs: Any) -> GradientModel:
    """``model`` itself when it is a :class:`GradientModel`, else one built from it."""
    if isinstance(model, GradientModel):
        if kwargs.get("input") not in (None, model.input) or kwargs.get("output") not in (
            None,
            model.output,
        ):
            raise ExplainError("input/output are fixed by the GradientModel; build another")
        return model
    return GradientModel(model, **kwargs)
