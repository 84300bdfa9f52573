"""Constants inside an e-graph: which classes are computable from constants alone, and folding
them (egg's constant-folding analysis, evaluated on onnxruntime).

A rewrite often computes a new weight from constants (``Mul(w, s)``, ``Pad(w, ...)``,
``Concat(w1, w2)``); rules whose ``where`` clause asks ``is_const(w)`` must see it as a constant.
:class:`ConstantFolder` keeps two facts per class:

- **computed** (:attr:`~optimizer.search.egraph.EClass.computed`): a foldable e-node of the class
  (as :func:`optimizer.cost.foldable` says) reads only classes that hold a constant or are
  computed themselves, and its results are at most :data:`FOLD_TENSOR_BYTES`. E-matching answers
  ``is_const`` for such a class with yes without its data (:mod:`~optimizer.search.eqsat_match`),
  and extraction prices the computation as free, as it always did; the pass after the search
  folds what the extracted graph keeps. Most such classes are weights a rewrite enlarged,
  concatenated or padded, and most are never read again: folding them all took most of
  saturation's time (on ResNet-50, 0.34 of 0.48 s, hashing 200 MB of padded kernels).
- **constant**: the class holds a constant, which rules whose conditions read data (``value``,
  ``all_equal``, literals) need. Results of at most :data:`EAGER_FOLD_BYTES` (shapes, pads,
  scalars, small kernels) are folded as soon as their inputs are constants; larger ones only
  when a match asks for their data (:meth:`ConstantFolder.demand`): the match is retried in the
  next iteration, once the fold has merged the constant into the class.

Folding evaluates the e-nodes in one onnxruntime session per round
(:func:`optimizer.passes.fold.fold_constants`, so values are what the runtime computes) and
merges each result into its class, whose representative then becomes the constant. A batch the
runtime refuses is bisected, so one bad node does not block the rest. Concat, Transpose and
zero Pad only move data: numpy computes them, bit for bit what the runtime would, without
serialising their weights into a model (on NasRNN, whose merges concatenate weights, sessions
took half of saturation's time). Folding stops at :data:`FOLD_TOTAL_BYTES`, and so does the
computed analysis (the bytes of computed classes count separately), which bounds how far
rules over computed weights can grow the e-graph.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from optimizer.cost import foldable
from optimizer.ir import Graph, ModelMeta, Node, TensorData, TensorType, Value, constant
from optimizer.ir.types import num_elements
from optimizer.passes.fold import fold_constants
from optimizer.search.egraph import EGraph

__all__ = [
    "EAGER_FOLD_BYTES",
    "FOLD_TENSOR_BYTES",
    "FOLD_TOTAL_BYTES",
    "FOLDED",
    "ConstantFolder",
]

#: Largest tensor a computed class may hold (and one folding may create), and the most bytes
#: folding may add in one search (computed classes have a budget of their own, as large).
#: Constants are only needed for rules' conditions (extraction prices a constant computation
#: as free, and the pass after the search folds what the result keeps), while copying,
#: hashing and evaluating weights costs time in proportion to their bytes: folding VGG-19's
#: enlarged 3x3 kernels (26 MB each) took 6 s and enabled nothing. 8 MiB still covers
#: NasRNN's eight concatenated 512x512 weights.
FOLD_TENSOR_BYTES = 8 * 1024 * 1024
FOLD_TOTAL_BYTES = 256 * 1024 * 1024
#: Results up to this size are folded as soon as their inputs are constants; larger ones
#: only on demand (module docstring).
EAGER_FOLD_BYTES = 64 * 1024
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
    """Computed classes and folding of an e-graph, kept up to date as it grows (see the
    module docstring)."""

    def __init__(self, eg: EGraph, meta: ModelMeta) -> None:
        self.eg = eg
        self.meta = meta
        self.folded = 0  # results merged into classes
        self.bytes = 0  # bytes of the constants created
        self.computed_bytes = 0  # bytes of the classes marked computed
        #: E-nodes to look at: new ones, and readers of classes that gained a constant or
        #: became computed (an e-node is looked at again only when one of its inputs changed).
        self._queue: set[int] = set()
        self._seen = 0  # e-nodes below this id have been queued
        self._done: set[int] = set()  # e-nodes folded, or never to fold
        self._demanded: set[int] = set()

    # ------------------------------------------------------------------ queries

    def constant_like(self, c: int) -> bool:
        """Whether class ``c`` holds a constant or is computed (``is_const`` for rules)."""
        return self.eg.klass(c).constant_like

    def unfolded(self, c: int) -> bool:
        """Whether class ``c`` is computed but holds no constant yet (its data needs a fold)."""
        cls = self.eg.klass(c)
        return cls.const is None and cls.computed

    def demand(self, classes: Iterable[int]) -> None:
        """Ask for the constants of computed ``classes`` (folded by the next :meth:`run`)."""
        self._demanded.update(self.eg.find(c) for c in classes)

    # ------------------------------------------------------------------ updating

    def run(self, deadline: float) -> None:
        """Fold what became foldable and small, and what was demanded, round after round,
        until ``deadline``; then mark the classes that became computable."""
        self._take_news()
        wanted = self._wanted()
        self._queue |= wanted
        for _ in range(_FOLD_ROUNDS):
            if time.perf_counter() >= deadline or self.bytes >= FOLD_TOTAL_BYTES:
                break
            batch = self._candidates(wanted)
            if not batch:
                break
            sessions = [0]
            folded = 0
            for chunk in _chunks(batch, FOLD_CHUNK_BYTES):
                if time.perf_counter() >= deadline:
                    self._queue.update(e for e, _ in chunk)  # left for the next run
                    continue
                self._done.update(e for e, _ in chunk)
                folded += self._evaluate(chunk, sessions)
            self.eg.rebuild()
            self._take_news()
            if not folded:
                break
        self._mark_computed()

    def _take_news(self) -> None:
        """Queue the e-nodes created since the last call and the readers of classes that a
        union gave a constant or made computed."""
        eg = self.eg
        self._queue.update(range(self._seen, len(eg.enodes)))
        self._seen = len(eg.enodes)
        for c in eg.take_gained():
            self._queue.update(eg.parents(c))

    def _wanted(self) -> set[int]:
        """E-nodes to fold for the demanded classes: in each, the first foldable member whose
        inputs are constant-like, and the same for those inputs that hold no constant."""
        eg = self.eg
        wanted: set[int] = set()
        todo = sorted(self._demanded)
        self._demanded = set()
        seen: set[int] = set()
        while todo:
            c = eg.find(todo.pop())
            if c in seen or not self.unfolded(c):
                continue
            seen.add(c)
            for e in eg.members(c):
                if not foldable(eg.enodes[e].node):
                    continue
                kids = [k for k in eg.kid_classes(e) if k is not None]
                if all(eg.klass(k).constant_like for k in kids):
                    wanted.add(e)
                    todo.extend(k for k in kids if self.unfolded(k))
                    break
        return wanted

    def _candidates(self, wanted: set[int]) -> list[tuple[int, Node]]:
        """Queued foldable e-nodes whose inputs all have constants and whose outputs have none
        yet, small or ``wanted``, each rebuilt over those constants (taken off the queue)."""
        eg = self.eg
        batch = []
        for e in sorted(self._queue):
            if e in self._done:
                self._queue.discard(e)
                continue
            enode = eg.enodes[e]
            node = enode.node
            if not enode.alive or not foldable(node):
                self._done.add(e)
                continue
            kids = eg.kid_classes(e)
            consts = [None if k is None else eg.klass(k).const for k in kids]
            if any(k is not None and c is None for k, c in zip(kids, consts, strict=True)):
                continue  # not yet (it may be computed: the queue keeps it for that)
            if all(eg.klass(o).const is not None for o in enode.outs):
                self._done.add(e)
                continue
            size = sum(_static_bytes(v) or 0 for v in node.outputs)
            if size > FOLD_TENSOR_BYTES:
                self._done.add(e)
                continue
            if size > EAGER_FOLD_BYTES and e not in wanted:
                continue  # left computed: a match may still ask for it
            if self.bytes + size > FOLD_TOTAL_BYTES:
                continue
            self._queue.discard(e)
            same = all(a is b for a, b in zip(consts, node.inputs, strict=True))
            batch.append((e, node if same else node.with_inputs(consts)))
        return batch

    def _mark_computed(self) -> None:
        """Mark the classes of the queued e-nodes that are foldable over constant-like
        classes computed (up to :data:`FOLD_TENSOR_BYTES` per result and
        :data:`FOLD_TOTAL_BYTES` in all), and mark them changed, so that matches over them are
        looked for again; their readers are looked at in turn. Empties the queue."""
        eg = self.eg
        todo = sorted(self._queue, reverse=True)  # popped in ascending order
        self._queue = set()
        while todo:
            e = todo.pop()
            enode = eg.enodes[e]
            if e in self._done or not enode.alive or not foldable(enode.node):
                continue
            classes = [eg.klass(o) for o in enode.outs]
            if all(cls.constant_like for cls in classes):
                continue
            if not all(k is None or eg.klass(k).constant_like for k in eg.kid_classes(e)):
                continue  # queued again when one of its inputs changes
            size = sum(_static_bytes(v) or FOLD_TENSOR_BYTES + 1 for v in enode.node.outputs)
            if size > FOLD_TENSOR_BYTES or self.computed_bytes + size > FOLD_TOTAL_BYTES:
                continue
            self.computed_bytes += size
            for o, cls in zip(enode.outs, classes, strict=True):
                if not cls.constant_like:
                    cls.computed = True
                    eg.touch(o)
                    todo.extend(reversed(eg.parents(o)))

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
            dtype = node.outputs[0].type.dtype  # type: ignore[union-attr]
            count += self._merge(e, 0, constant(_frozen(array, dtype)))
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
    before = [int(p) for p in pads[: data.ndim]]
    shape = [n + int(a) + int(b) for n, a, b in zip(data.shape, before, pads[data.ndim :])]
    # np.full and one slice assignment: half the time of np.pad on large kernels
    result = np.full(shape, fill, dtype=data.dtype)
    result[tuple(slice(a, a + n) for a, n in zip(before, data.shape, strict=True))] = data
    return result


def _frozen(array: np.ndarray, dtype) -> TensorData:
    """A constant over ``array`` (fresh, or a view of read-only data) without copying it, as
    :meth:`TensorData.from_array` would: nobody else holds it, so read-only is enough."""
    array.flags.writeable = False
    return TensorData(dtype, array.shape, lambda: array)


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
