"""Constant folding inside an e-graph (egg's constant-folding analysis, on onnxruntime).

A rewrite often computes a new weight from constants (``Mul(w, s)``, ``Pad(w, ...)``,
``Concat(w1, w2)``); rules whose ``where`` clause asks ``is_const(w)`` can only use it once it
is a constant. :class:`ConstantFolder` finds e-nodes that are foldable (as
:func:`optimizer.cost.foldable` says) and whose input classes all hold a constant, evaluates
them in one onnxruntime session per round (:func:`optimizer.passes.fold.fold_constants`, so
values are what the runtime computes) and merges each result into its class, whose
representative then becomes the constant. A batch the runtime refuses is bisected, so one bad
node does not block the rest. Concat and Transpose only move data: numpy computes them, bit for
bit what the runtime would, without serialising their weights into a model (on NasRNN, whose
merges concatenate weights, sessions took half of saturation's time). Results over
:data:`FOLD_TENSOR_BYTES` are not folded.
"""

from __future__ import annotations

import time

import numpy as np

from optimizer.cost import foldable
from optimizer.ir import Graph, ModelMeta, Node, TensorData, TensorType, Value, constant
from optimizer.ir.types import num_elements
from optimizer.passes.fold import fold_constants
from optimizer.search.egraph import EGraph

__all__ = ["FOLD_TENSOR_BYTES", "FOLD_TOTAL_BYTES", "FOLDED", "ConstantFolder"]

#: Largest tensor one folding may create, and the most bytes folding may add in one search.
#: Folding is only needed for ``is_const`` preconditions (extraction prices a constant
#: computation as free, and the pass after the search folds what the result keeps), while
#: copying, hashing and evaluating weights costs time in proportion to their bytes: folding
#: VGG-19's enlarged 3x3 kernels (26 MB each) took 6 s and enabled nothing. 8 MiB still
#: covers NasRNN's eight concatenated 512x512 weights.
FOLD_TENSOR_BYTES = 8 * 1024 * 1024
FOLD_TOTAL_BYTES = 256 * 1024 * 1024
#: Folding rounds per iteration (a rewrite's constant chain folds one level per round), and
#: onnxruntime sessions per round (a batch that fails is bisected to skip the bad node).
_FOLD_ROUNDS = 8
_FOLD_SESSIONS = 24
#: Output bytes evaluated per onnxruntime session; the deadline is checked between chunks,
#: so one round of folding big weight concatenations cannot overrun the time limit by seconds.
FOLD_CHUNK_BYTES = 32 * 1024 * 1024
#: ``ENode.origin`` of folded constants.
FOLDED = -2


class ConstantFolder:
    """Folds an e-graph's constant computations as they appear (see the module docstring)."""

    def __init__(self, eg: EGraph, meta: ModelMeta) -> None:
        self.eg = eg
        self.meta = meta
        self.folded = 0  # results merged into classes
        self.bytes = 0  # bytes of the constants created
        self._tried: set[int] = set()

    def run(self, deadline: float) -> None:
        """Fold what became foldable, round after round, until ``deadline``."""
        for _ in range(_FOLD_ROUNDS):
            if time.perf_counter() >= deadline or self.bytes >= FOLD_TOTAL_BYTES:
                return
            batch = self._candidates()
            if not batch:
                return
            sessions = [0]
            folded = 0
            for chunk in _chunks(batch, FOLD_CHUNK_BYTES):
                if time.perf_counter() >= deadline:
                    break
                folded += self._evaluate(chunk, sessions)
            self.eg.rebuild()
            if not folded:
                return

    def _candidates(self) -> list[tuple[int, Node]]:
        """Foldable e-nodes whose inputs all have constants and whose outputs have none yet,
        each rebuilt over those constants."""
        eg = self.eg
        batch = []
        for e in eg.iter_enodes():
            if e in self._tried:
                continue
            enode = eg.enodes[e]
            node = enode.node
            if not foldable(node):
                self._tried.add(e)
                continue
            kids = eg.kid_classes(e)
            consts = [None if k is None else eg.klass(k).const for k in kids]
            if any(k is not None and c is None for k, c in zip(kids, consts, strict=True)):
                continue  # not yet: an input may become constant later
            self._tried.add(e)
            if all(eg.klass(o).const is not None for o in enode.outs):
                continue
            size = sum(_static_bytes(v) or 0 for v in node.outputs)
            if size > FOLD_TENSOR_BYTES or self.bytes + size > FOLD_TOTAL_BYTES:
                continue
            same = all(a is b for a, b in zip(consts, node.inputs, strict=True))
            batch.append((e, node if same else node.with_inputs(consts)))
        return batch

    def _evaluate(self, batch: list[tuple[int, Node]], sessions: list[int]) -> int:
        """Evaluate ``batch`` and merge each result into its class: data movement in numpy
        (exact, and it spares serialising the weights into a model), the rest in one
        onnxruntime session; a batch that the runtime refuses as a whole is bisected."""
        count = 0
        rest = []
        for e, node in batch:
            if self.bytes >= FOLD_TOTAL_BYTES:
                return count
            array = _move_data(node)
            if array is None:
                rest.append((e, node))
                continue
            count += self._merge(
                e, 0, constant(TensorData.from_array(array, node.outputs[0].type.dtype))
            )  # type: ignore[union-attr]
        self.folded += count
        return count + (self._run(rest, sessions) if rest else 0)

    def _merge(self, e: int, i: int, value: Value) -> int:
        self.bytes += value.constant.nbytes  # type: ignore[union-attr]
        c = self.eg.add(value, origin=FOLDED)
        self.eg.union(self.eg.enodes[e].outs[i], c)
        return 1

    def _run(self, batch: list[tuple[int, Node]], sessions: list[int]) -> int:
        """Evaluate ``batch`` in one onnxruntime session (bisected when refused)."""
        if sessions[0] >= _FOLD_SESSIONS or self.bytes >= FOLD_TOTAL_BYTES:
            return 0
        sessions[0] += 1
        outputs = [v for _, node in batch for v in node.outputs]
        names = tuple(f"fold{i}" for i in range(len(outputs)))
        probe = Graph((), tuple(outputs), names, meta=self.meta)
        try:
            result = fold_constants(probe, size_limit=FOLD_TENSOR_BYTES)
        except Exception:  # noqa: BLE001 - folding is an optimisation: skip what fails
            result = probe
        if not any(v.is_constant for v in result.outputs):
            if len(batch) == 1:
                return 0
            half = len(batch) // 2
            return self._run(batch[:half], sessions) + self._run(batch[half:], sessions)
        count = 0
        values = iter(result.outputs)
        for e, node in batch:
            for i in range(len(node.outputs)):
                value = next(values)
                if value.is_constant:
                    count += self._merge(e, i, value)
        self.folded += count
        return count


#: Ops whose folding only moves data, so numpy computes exactly what the runtime would.
_DATA_MOVEMENT = ("Concat", "Transpose", "Pad")


def _move_data(node: Node) -> np.ndarray | None:
    """The value of a Concat, Transpose or zero-growing Pad over constants, else None."""
    if node.op not in _DATA_MOVEMENT or len(node.outputs) != 1 or None in node.inputs:
        return None
    out = node.outputs[0].type
    if not isinstance(out, TensorType) or out.shape is None:
        return None
    try:
        arrays = [v.constant.numpy() for v in node.inputs]  # type: ignore[union-attr]
        if node.op == "Concat":
            result = np.concatenate(arrays, axis=node.attr("axis"))
        elif node.op == "Transpose":
            perm = node.attr("perm", None)
            result = np.transpose(arrays[0], None if perm is None else tuple(perm))
        else:
            result = _pad(node, arrays)
    except Exception:  # noqa: BLE001 - anything unusual goes to onnxruntime
        return None
    if result is None:
        return None
    if result.dtype == object or tuple(result.shape) != tuple(out.shape):
        return None
    return np.ascontiguousarray(result)


def _pad(node: Node, arrays: list[np.ndarray]) -> np.ndarray | None:
    """Pad in "constant" mode with non-negative pads on every axis (opset >= 11: pads and
    the fill value are inputs), else None."""
    if node.attr("mode", b"constant") not in (b"constant", "constant") or len(arrays) not in (2, 3):
        return None
    data, pads = arrays[0], arrays[1].astype(np.int64).reshape(-1)
    if pads.size != 2 * data.ndim or (pads < 0).any():
        return None
    fill = arrays[2].reshape(-1)[0] if len(arrays) == 3 and arrays[2].size else 0
    widths = [(int(pads[i]), int(pads[i + data.ndim])) for i in range(data.ndim)]
    return np.pad(data, widths, mode="constant", constant_values=fill)


def _chunks(batch: list[tuple[int, Node]], limit: int) -> list[list[tuple[int, Node]]]:
    """``batch`` cut, in order, into runs of at most ``limit`` output bytes (at least one
    node each)."""
    chunks: list[list[tuple[int, Node]]] = [[]]
    size = 0
    for item in batch:
        nbytes = sum(_static_bytes(v) or 0 for v in item[1].outputs)
        if chunks[-1] and size + nbytes > limit:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += nbytes
    return chunks if chunks[0] else []


def _static_bytes(value: Value) -> int | None:
    t = value.type
    if not isinstance(t, TensorType) or t.shape is None:
        return None
    count = num_elements(t.shape)
    return None if count is None else int(count * (t.dtype.itemsize or 8))
