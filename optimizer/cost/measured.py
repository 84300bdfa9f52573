"""The measured cost model: each distinct node timed alone on onnxruntime, cached on disk.

A node's cost is the time onnxruntime takes to run it as a one-node model
(:mod:`optimizer.cost.isolate`) on the chosen device, less the fixed cost of a ``run`` call,
timed as it runs inside a model: operands computed from constants are constants (onnxruntime
folds them), a node with large weights runs as copies with their own weights (read from memory,
not cache), and on the CPU sampling outlasts bursts of other processes' work.
Timings are keyed by everything they depend on (op, domain, opset, attributes, input and
output types with symbolic dimensions bound, which inputs are constant and the values of those
that shape the kernel, provider, thread count, CPU or GPU model, onnxruntime version), so
nodes with the same signature are timed once, and stored in the user cache folder
(``cost-timings.json``, see :mod:`optimizer.cost.cache`) for later runs.

Nodes that cannot run alone (control flow, sequence types, unknown ranks, ops onnxruntime
refuses in isolation) fall back to the analytic estimate calibrated on the same device
(:meth:`AnalyticCost.calibrated`), so every estimate is in seconds. Symbolic dimensions are
bound to 1 unless ``bindings`` say otherwise; :attr:`MeasuredCost.symbols` lists those that
were bound.

The model is node-additive (:class:`~optimizer.cost.CostModel`) and memoizes per node, so a
search prices rewrites from the nodes they add and remove; the first estimate of a new
signature costs a few milliseconds, every later one a dictionary look-up.

Fusions onnxruntime makes across nodes depend on more than one node: an elementwise epilogue
joins the Conv/MatMul/Gemm before it (priced at 0 per node, on the assumption that the
producer has no other reader), and an Add joins the LayerNormalization (SkipLayerNormalization)
or Gelu (BiasGelu) reading it only where that is the Add's only reader. The latter are priced
when a whole graph is, where the readers are known (:meth:`MeasuredCost.total`,
:meth:`MeasuredCost.groups`): the pair costs its fused kernel's own timing. onnxruntime 1.32's
CPU SkipLayerNormalization takes several times the pair it replaces (about 20 us more per
call on a 32 x 64 GPT-2 block), so which residual Adds it fuses sets a transformer's latency.
"""

from __future__ import annotations

import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from optimizer.cost import isolate
from optimizer.cost.additive import NodeAdditive
from optimizer.cost.analytic import AnalyticCost
from optimizer.cost.cache import TIMINGS_FILE, JsonStore, cache_dir
from optimizer.cost.device import DeviceSpec
from optimizer.ir import REGISTRY, Graph, Node, Value
from optimizer.rewrite.match import context

__all__ = ["Estimate", "MeasuredCost"]

#: Producers onnxruntime fuses elementwise consumers into (Conv+Add+Relu, Gemm+Relu, ...).
ANCHOR_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})
#: Consumers that may be fused into such a producer, directly or after one another.
EPILOGUE_OPS = frozenset(
    {"Add", "Sub", "Mul", "Div", "Sum", "Relu", "Clip", "Sigmoid", "Tanh", "LeakyRelu",
     "HardSigmoid", "HardSwish", "Elu", "Softplus", "Gelu", "BatchNormalization"}
)  # fmt: skip
#: Longest chain of fused consumers looked at behind one producer.
_MAX_EPILOGUE = 3
#: Version of the cached fusion decisions; bump when :func:`isolate.runs_as_one_kernel`
#: changes. 2: Reshapes around a Gemm (a rank-3 MatMul and its bias) change no data.
FUSION_VERSION = 2
#: Fusions onnxruntime makes across two nodes where the first one's only reader is the second
#: (consumer op -> producer ops of its first input): Add + LayerNormalization becomes
#: SkipLayerNormalization, whose onnxruntime 1.32 CPU kernel is several times slower than the
#: pair; a bias Add + Gelu becomes BiasGelu. Whether it does (shapes, constants) is asked of
#: onnxruntime for the pair alone (:func:`isolate.runs_as_one_kernel`); the fused kernel is
#: timed as the pair's model, and the pair then costs that time instead of the sum of its parts.
GROUP_OPS: dict[str, frozenset[str]] = {
    "LayerNormalization": frozenset({"Add"}),
    "Gelu": frozenset({"Add"}),
}

#: Save the cache file after this many new timings, and after pricing a whole graph when the
#: last save is this many seconds old (a search prices thousands of graphs).
_SAVE_EVERY = 64
_SAVE_SECONDS = 2.0


@dataclass(frozen=True)
class Estimate:
    """How one node was priced.

    ``source`` is "timed" (measured now), "cache" (measured before), "fused" (onnxruntime
    fuses the node into the kernel that produces its input: it costs nothing of its own), or
    "fallback" (the calibrated analytic estimate; ``reason`` says why it could not be timed).
    """

    seconds: float
    source: str
    description: str
    reason: str | None = None


class MeasuredCost(NodeAdditive):
    """Per-node onnxruntime timings, cached on disk (see the module docstring).

    - ``device``: where and how to time (:class:`DeviceSpec`, or "cpu"/"cuda" for its
      defaults: all usable CPUs, onnxruntime's ORT_ENABLE_ALL level for the one-node
      sessions);
    - ``cache``: the cache folder (default :func:`optimizer.cost.cache.cache_dir`);
    - ``bindings``: values of symbolic dimensions (others are 1);
    - ``fallback``: the model for nodes that cannot be timed (default: the analytic model
      calibrated on ``device``, built on first need);
    - ``sample_seconds``/``samples``/``warmup``: the timing of one node (the best of
      ``samples`` samples of at least ``sample_seconds`` each, after ``warmup`` calls);
    - ``use_cache``: False never reads nor writes the cache file;
    - ``fusion``: price at 0 an elementwise node that onnxruntime fuses into the Conv, MatMul
      or Gemm producing its input (directly or behind other fused nodes), as onnxruntime
      itself decides for that pair on this device (:func:`isolate.runs_as_one_kernel`,
      cached like a timing). It assumes the producer has no other reader, which onnxruntime
      requires and a single node cannot see. And when pricing a graph (:meth:`total`), where
      the readers are known, price a pair of :data:`GROUP_OPS` that onnxruntime fuses
      (Add + LayerNormalization into SkipLayerNormalization) where the Add's only reader is
      the consumer as the fused kernel's own timing (:meth:`group_correction`).
    """

    units = "seconds"

    def __init__(
        self,
        device: DeviceSpec | str | None = None,
        *,
        cache: str | os.PathLike | None = None,
        bindings: Mapping[str, int] | None = None,
        fallback: NodeAdditive | None = None,
        sample_seconds: float = isolate.SAMPLE_SECONDS,
        samples: int = isolate.SAMPLES,
        warmup: int = isolate.WARMUP,
        use_cache: bool = True,
        fusion: bool = True,
    ) -> None:
        self.device = DeviceSpec(device) if isinstance(device, str) else device or DeviceSpec()
        self.cache_dir = cache_dir(cache)
        self.bindings = dict(bindings or {})
        self.sample_seconds = sample_seconds
        self.samples = samples
        self.warmup = warmup
        self.use_cache = use_cache
        self.fusion = fusion
        self._fallback = fallback
        self._device_key = self.device.key()
        self._store = JsonStore(self.cache_dir / TIMINGS_FILE) if use_cache else None
        self._saved_at = time.monotonic()
        if self._store is not None:  # flush what is left when the model goes away
            weakref.finalize(self, _flush, self._store)
        self._memo: weakref.WeakKeyDictionary[Node, Estimate] = weakref.WeakKeyDictionary()
        self._by_key: dict[str, Estimate] = {}
        self._fusions: dict[str, bool] = {}
        #: Consumer of a pair -> the fused pair's seconds (None: not fused). The consumer
        #: fixes the pair: its first input's producer.
        self._group_memo: weakref.WeakKeyDictionary[Node, float | None] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.RLock()
        self._new = 0
        self.opsets: dict[str, int] = dict(isolate.DEFAULT_OPSETS)
        self.ir_version: int | None = None
        self._bound = False
        #: Symbolic dimensions bound while pricing (to 1 unless ``bindings`` gave a value).
        self.symbols: set[str] = set()
        #: Counters: signatures read from the disk cache or timed now, nodes fused into their
        #: producer or priced by the fallback, and seconds spent timing.
        self.stats = {"cache": 0, "timed": 0, "fallback": 0, "fused": 0, "groups": 0,
                      "timing_seconds": 0.0}  # fmt: skip

    # ------------------------------------------------------------------ the protocol

    def bind(self, graph: Graph) -> MeasuredCost:
        """Take the opsets (which fix each op's semantics) of ``graph``'s model. Pricing a
        graph (``model(graph)``) binds it; a caller that prices nodes of a graph without ever
        pricing the graph must bind it first, or nodes are built at opset 17."""
        self.opsets = {d or "": v for d, v in graph.meta.opset_imports}
        self.opsets.setdefault("", isolate.DEFAULT_OPSETS[0][1])
        self.ir_version = graph.meta.ir_version
        self._bound = True
        return self

    def _opsets_for(self, node: Node) -> dict[str, int]:
        """The bound opsets; before any graph was bound, the default opset when the node's
        inputs and attributes fit it there, else the newest opset where they do (a ReduceMean
        with its axes as an input is opset 18 or later)."""
        if self._bound or node.domain not in ("", "ai.onnx"):
            return self.opsets
        inputs, names = len(node.inputs), [name for name, _ in node.attrs]
        default = self.opsets[""]
        if REGISTRY.fits_signature("", node.op, default, inputs, names) is not False:
            return self.opsets
        for version in range(isolate.NEWEST_OPSET, 6, -1):
            if REGISTRY.fits_signature("", node.op, version, inputs, names):
                return {**self.opsets, "": version}
        return self.opsets

    def node_cost(self, node: Node) -> float:
        """Seconds ``node`` takes (memoized per node: nodes are immutable)."""
        return self.estimate(node).seconds

    def total(self, order: Sequence[Node], outputs: Iterable[Value] = ()) -> float:
        """Seconds of the nodes ``order`` (topological; ``outputs``: the values the graph
        returns), with the cross-node fusions onnxruntime makes there priced as their fused
        kernel (:meth:`group_correction`); new timings are saved now and then (and when the
        model is garbage collected or the interpreter exits)."""
        try:
            free = self.free_nodes(order)
            seconds = sum(self.node_cost(n) for n in order if n not in free)
            if self.fusion:
                seconds += self.group_correction(order, free, outputs)
            return seconds
        finally:
            if time.monotonic() - self._saved_at > _SAVE_SECONDS:
                self.save()

    def __call__(self, graph: Graph) -> float:
        """Seconds of ``graph`` (its opsets are adopted first, see :meth:`bind`)."""
        self.bind(graph)
        return self.total(context(graph).order, graph.outputs)

    # ------------------------------------------------------------------ fusions across nodes

    def groups(
        self, order: Sequence[Node], free: set[Node] | None = None, outputs: Iterable[Value] = ()
    ) -> list[tuple[Node, Node]]:
        """The ``(producer, consumer)`` pairs of :data:`GROUP_OPS` in ``order`` whose
        producer's only use is the consumer's first input (not a graph output, no other
        reader) and which onnxruntime does not already fuse into the kernel before it: the
        pairs onnxruntime may fuse. Which it does is :meth:`group_estimate`'s business."""
        free = self.free_nodes(order) if free is None else free
        uses: dict[Value, int] = {}
        for node in order:
            for value in node.inputs:
                if value is not None:
                    uses[value] = uses.get(value, 0) + 1
        for value in outputs:
            uses[value] = uses.get(value, 0) + 1
        found = []
        for node in order:
            producers = GROUP_OPS.get(node.op)
            if producers is None or node.domain != "" or node in free or not node.inputs:
                continue
            first = node.inputs[0]
            if first is None or first.node.is_source or first.node in free:
                continue
            producer = first.node
            if producer.op not in producers or producer.domain != "":
                continue
            if len(producer.outputs) != 1 or uses.get(first, 0) != 1:
                continue
            if self.estimate(producer).source == "fused":
                continue  # it runs inside its own producer's kernel (a MatMul's bias: Gemm)
            found.append((producer, node))
        return found

    def group_correction(
        self, order: Sequence[Node], free: set[Node] | None = None, outputs: Iterable[Value] = ()
    ) -> float:
        """Seconds to add to the per-node sum of ``order`` for the pairs onnxruntime fuses
        (:meth:`groups`): each fused pair's kernel time less its nodes' own prices."""
        correction = 0.0
        for pair in self.groups(order, free, outputs):
            fused = self.group_estimate(pair)
            if fused is not None:
                correction += fused - sum(self.node_cost(n) for n in pair)
        return correction

    def attributed(self, order: Sequence[Node], outputs: Iterable[Value] = ()) -> dict[Node, float]:
        """Seconds of each non-free node of ``order`` as the graph runs: a pair onnxruntime
        fuses (:meth:`groups`) costs its fused kernel's time on its consumer and 0 on its
        producer (with :attr:`fusion`); other nodes cost :meth:`node_cost`. Sums to
        :meth:`total` (reports per node)."""
        free = self.free_nodes(order)
        seconds = {n: self.node_cost(n) for n in order if n not in free}
        if self.fusion:
            for producer, consumer in self.groups(order, free, outputs):
                fused = self.group_estimate((producer, consumer))
                if fused is not None:
                    seconds[producer], seconds[consumer] = 0.0, fused
        return seconds

    def group_estimate(self, pair: tuple[Node, Node]) -> float | None:
        """Seconds of the kernel onnxruntime fuses ``pair`` into (its model timed alone), or
        None when onnxruntime does not fuse it (or it cannot be built); cached like a
        timing, memoized per pair."""
        with self._lock:
            if pair[1] in self._group_memo:
                return self._group_memo[pair[1]]
            result = self._group_memo[pair[1]] = self._time_group(list(pair))
            return result

    def _chain_key(self, chain: list[Node], tag: list) -> tuple[str, dict[str, int]] | None:
        """The cache key of ``chain`` (its nodes' signatures and the links between them, after
        ``tag``) and the opsets to build it at; None when a node cannot be timed."""
        try:
            opsets = max((self._opsets_for(n) for n in chain), key=lambda o: o[""])
            texts = [isolate.signature(n, opsets, bindings=self.bindings).text for n in chain]
        except isolate.Untimeable:
            return None
        links = [[chain.index(v.node) if v is not None and v.node in chain else -1
                  for v in n.inputs] for n in chain]  # fmt: skip
        text = json.dumps([*tag, texts, links])
        return isolate.Signature(text, "", frozenset()).key(self._device_key), opsets

    def _time_group(self, chain: list[Node]) -> float | None:
        keyed = self._chain_key(chain, ["group"])
        if keyed is None:
            return None
        key, opsets = keyed
        entry = self._store.get(key) if self._store is not None else None
        if entry is not None and ("seconds" in entry or "fused" in entry):
            self.stats["cache"] += 1
            return float(entry["seconds"]) if "seconds" in entry else None
        start = time.perf_counter()
        description = " + ".join(n.op for n in chain)
        try:
            built = isolate.build_chain(
                chain, opsets, bindings=self.bindings, ir_version=self.ir_version
            )
            if not isolate.runs_as_one_kernel(built, self.device):
                self._record(key, {"fused": False, "op": description})
                return None
            seconds, raw = isolate.time_model(
                built, self.device, sample_seconds=self.sample_seconds,
                samples=self.samples, warmup=self.warmup,
            )  # fmt: skip
        except Exception:  # noqa: BLE001 - onnxruntime refuses the pair: priced per node
            self._record(key, {"fused": False, "op": description})
            return None
        finally:
            self.stats["timing_seconds"] += time.perf_counter() - start
        self.stats["timed"] += 1
        self.stats["groups"] += 1
        self._record(key, {"seconds": seconds, "raw": raw, "op": description})
        return seconds

    # ------------------------------------------------------------------ estimates

    @property
    def fallback(self) -> NodeAdditive:
        """The model of nodes that cannot be timed (calibrated analytic by default)."""
        if self._fallback is None:
            from optimizer.cost import calibrate  # a sweep of seconds: only on first need

            calibration = calibrate.calibration_for(self.device, cache_dir=self.cache_dir)
            self._fallback = AnalyticCost.from_calibration(calibration)
        return self._fallback

    def estimate(self, node: Node) -> Estimate:
        """How ``node`` is priced: seconds, and whether they were timed, cached or estimated."""
        found = self._memo.get(node)
        if found is not None:
            return found
        with self._lock:
            found = self._memo.get(node)
            if found is None:
                found = self._memo[node] = self._estimate(node)
            return found

    def _estimate(self, node: Node) -> Estimate:
        if node.is_source:
            return Estimate(0.0, "cache", node.op)
        try:
            sig = isolate.signature(node, self._opsets_for(node), bindings=self.bindings)
        except isolate.Untimeable as exc:
            return self._fall_back(node, str(exc), f"{node.op} (not timeable)")
        self.symbols |= sig.symbols
        if self.fusion and node.op in EPILOGUE_OPS and self._fused(node):
            self.stats["fused"] += 1
            return Estimate(0.0, "fused", sig.description)
        key = sig.key(self._device_key)
        known = self._by_key.get(key)
        if known is not None:
            return known
        entry = self._store.get(key) if self._store is not None else None
        if entry is not None and ("seconds" in entry or "untimeable" in entry):
            if "seconds" in entry:
                self.stats["cache"] += 1
                result = Estimate(float(entry["seconds"]), "cache", sig.description)
            else:
                result = self._fall_back(node, str(entry["untimeable"]), sig.description)
            self._by_key[key] = result
            return result
        result = self._time(node, sig, key, self._opsets_for(node))
        self._by_key[key] = result
        return result

    def _time(
        self, node: Node, sig: isolate.Signature, key: str, opsets: dict[str, int]
    ) -> Estimate:
        start = time.perf_counter()
        try:
            try:
                built = isolate.build(
                    node, opsets, bindings=self.bindings, ir_version=self.ir_version
                )
            except isolate.Untimeable:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. a type numpy cannot hold
                raise isolate.Untimeable(f"cannot build it alone: {exc}") from exc
            seconds, raw = isolate.time_model(
                built,
                self.device,
                sample_seconds=self.sample_seconds,
                samples=self.samples,
                warmup=self.warmup,
            )
        except isolate.Untimeable as exc:
            self._record(key, {"untimeable": str(exc), "op": sig.description})
            return self._fall_back(node, str(exc), sig.description)
        finally:
            self.stats["timing_seconds"] += time.perf_counter() - start
        self.stats["timed"] += 1
        entry = {"seconds": seconds, "raw": raw, "op": sig.description}
        copies = isolate.cold_copies(built)
        if copies > 1:  # timed with its weights out of cache (isolate.replicate)
            entry["copies"] = copies
        self._record(key, entry)
        return Estimate(seconds, "timed", sig.description)

    def _chain(self, node: Node, depth: int = 0) -> list[Node] | None:
        """``[producer, fused..., node]`` ending in ``node``, starting at a Conv/MatMul/Gemm,
        through consumers already fused into it; None when there is none."""
        producers = [v.node for v in node.inputs if v is not None and not v.node.is_source]
        for p in producers:
            if p.op in ANCHOR_OPS and p.domain == "":
                return [p, node]
        if depth >= _MAX_EPILOGUE:
            return None
        for p in producers:
            if p.op in EPILOGUE_OPS and self.estimate(p).source == "fused":
                chain = self._chain(p, depth + 1)
                if chain is not None:
                    return [*chain, node]
        return None

    def _fused(self, node: Node) -> bool:
        """Whether onnxruntime runs ``node`` inside the kernel of the chain it ends."""
        chain = self._chain(node)
        if chain is None:
            return False
        keyed = self._chain_key(chain, ["fusion", FUSION_VERSION])
        if keyed is None:
            return False
        key, opsets = keyed
        if key in self._fusions:
            return self._fusions[key]
        entry = self._store.get(key) if self._store is not None else None
        if entry is not None and "fused" in entry:
            fused = bool(entry["fused"])
        else:
            try:
                built = isolate.build_chain(
                    chain, opsets, bindings=self.bindings, ir_version=self.ir_version
                )
                fused = isolate.runs_as_one_kernel(built, self.device)
            except Exception:  # noqa: BLE001 - onnxruntime refuses the chain: not fused
                fused = False
            self._record(key, {"fused": fused, "op": " -> ".join(n.op for n in chain)})
        self._fusions[key] = fused
        return fused

    def _fall_back(self, node: Node, reason: str, description: str) -> Estimate:
        self.stats["fallback"] += 1
        return Estimate(self.fallback.node_cost(node), "fallback", description, reason)

    def _record(self, key: str, entry: dict) -> None:
        if self._store is None:
            return
        self._store.put(key, entry)
        self._new += 1
        if self._new >= _SAVE_EVERY:
            self.save()

    # ------------------------------------------------------------------ batches and the file

    def prefetch(
        self, nodes: Iterable[Node], *, progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Price every node of ``nodes`` now (timing each new signature once) and save the
        cache; ``progress(done, total)`` is called after each node. Returns the count."""
        todo = [n for n in nodes if not n.is_source]
        try:
            for done, node in enumerate(todo, 1):
                self.estimate(node)
                if progress is not None:
                    progress(done, len(todo))
        finally:
            self.save()
        return len(todo)

    def save(self) -> None:
        """Write new timings to the cache file (a no-op when nothing is new)."""
        with self._lock:
            if self._store is not None and self._store.dirty:
                self._store.save()
            self._new = 0
            self._saved_at = time.monotonic()

    @property
    def cache_file(self):
        """The file timings are stored in (None without a cache)."""
        return None if self._store is None else self._store.path


def _flush(store: JsonStore) -> None:
    if store.dirty:
        store.save()
