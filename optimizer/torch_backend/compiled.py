"""The callable the backend returns for one FX graph: export, optimize, verify, run.

A :class:`CompiledGraph` compiles lazily, on the first call with a new input signature
(shapes, dtypes and devices of the tensor arguments, values of the specialized ones): the
arguments are then real tensors, whatever dynamo or aot_autograd passed at compile time
(aot_autograd passes FakeTensors, which the removed onnxrt backend's users tripped over).
Compiling means

1. export the graph to ONNX, parameters and buffers frozen as initializers
   (:mod:`optimizer.torch_backend.export`);
2. optimize it with graphopt (:func:`optimizer.optimize_file`);
3. open an onnxruntime session on the inputs' device (:mod:`optimizer.torch_backend.session`);
4. verify the optimized model against the exported one on onnxruntime, on this call's
   inputs (``verify``), and optionally the outputs against eager PyTorch (``check``)
   (:mod:`optimizer.torch_backend.verify`).

Compiled models are cached per signature; a model exported with symbolic dimensions serves
every signature it accepts, so ``dynamic=True`` compiles once, not per shape. Across processes,
the persistent compile cache (:mod:`optimizer.torch_backend.cache`) keeps the verified,
optimized models: a hit skips steps 1, 2 and 4 and opens the session from the cached file.
When any step fails, the graph runs eagerly from then on, after one warning naming the reason.

Frozen weights are a snapshot: each call checks that the frozen tensors are the same ones,
unmodified (data pointer and version counter); if they changed (an optimizer step, a loaded
state dict), the graph is compiled again with the new values.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx
import torch
import torch.fx
from torch.utils import _pytree as pytree

import optimizer
from optimizer.errors import GraphoptError
from optimizer.torch_backend import cache as compile_cache
from optimizer.torch_backend.export import (
    ExportedGraph,
    Output,
    bind_symbols,
    export_graph,
    meta_value,
    python_scalar_args,
)
from optimizer.torch_backend.options import BackendOptions
from optimizer.torch_backend.session import OrtRunner, SessionError, is_cuda, providers_for
from optimizer.torch_backend.verify import (
    REFERENCE_POOL,
    draws_random_numbers,
    mismatch,
    reference_outputs,
    save_with_external_data,
    verify_outputs,
    verify_seeded,
)


class GraphoptFallbackWarning(UserWarning):
    """A graph runs eagerly because graphopt could not export, optimize, verify or run it."""


class GraphoptRecompileWarning(UserWarning):
    """Frozen parameters changed since they were compiled in: the graph is compiled again."""


class CheckMismatchError(GraphoptError):
    """The compiled graph's outputs differ from eager PyTorch's on the first call."""


@dataclass
class CompileStats:
    """Seconds spent per step of the last compilation, and how many compilations ran.

    ``cache`` says how the persistent compile cache served it: ``"hit"`` (no export, no
    optimization), ``"miss"`` (compiled and stored), ``"off"``; ``lookup`` is the seconds
    spent computing the key and reading the entry, ``store`` those spent storing it, ``save``
    those spent writing the exported model to the temporary file the optimizer reads."""

    export: float = 0.0
    optimize: float = 0.0
    verify: float = 0.0
    session: float = 0.0
    check: float = 0.0
    lookup: float = 0.0
    store: float = 0.0
    save: float = 0.0
    compilations: int = 0
    exports: int = 0
    nodes_before: int = 0
    nodes_after: int = 0
    cache: str = "off"

    @property
    def total(self) -> float:
        return (
            self.export + self.optimize + self.verify + self.session + self.check
            + self.lookup + self.store + self.save
        )  # fmt: skip


@dataclass
class _Entry:
    """One compiled model: the export, its session, and the frozen tensors' snapshot."""

    exported: ExportedGraph
    runner: OrtRunner
    dtypes: tuple[torch.dtype, ...]
    devices: tuple[torch.device, ...]
    out_devices: tuple[torch.device | None, ...]
    snapshot: list[tuple[int, int, int]] = field(default_factory=list)
    random: bool = False

    def accepts(self, args: Sequence[Any]) -> bool:
        feeds = self.exported.feeds
        return (
            all(args[i].dtype == d for i, d in zip(feeds, self.dtypes))
            and all(args[i].device == d for i, d in zip(feeds, self.devices))
            and self.exported.accepts(args)
        )

    def fresh(self, args: Sequence[Any]) -> bool:
        """Whether every frozen argument is the tensor that was frozen, unmodified."""
        for i, ptr, version in self.snapshot:
            arg = args[i]
            if arg.data_ptr() != ptr or _version(arg) != version:
                return False
        return True


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors have no version counter; they cannot change
        return -1


class CompiledGraph:
    """The callable for one FX graph (see the module docstring).

    ``frozen``: argument indices to bake in (parameters and buffers for inference, none in
    training). ``name`` labels the graph in warnings.
    """

    def __init__(
        self,
        gm: torch.fx.GraphModule,
        options: BackendOptions,
        *,
        frozen: Collection[int] = (),
        name: str = "graph",
    ) -> None:
        self.gm = gm
        self.options = options
        self.frozen = frozenset(frozen)
        self.name = name
        self.stats = CompileStats()
        self.fallback_reason: str | None = None
        self._scalars = python_scalar_args(gm)
        self._cache: dict[tuple, _Entry] = {}
        self._entries: list[_Entry] = []
        self._checked = False
        outputs = gm.graph.output_node().args[0] if gm.graph.nodes else ()
        self._out_meta = [
            meta_value(leaf) if isinstance(leaf, torch.fx.Node) else None
            for leaf in pytree.tree_leaves(outputs)
        ]

    # -- calling ---------------------------------------------------------------------------

    def __call__(self, *args: Any) -> Any:
        if self.fallback_reason is not None:
            return self.gm(*args)
        key = self._signature(args)
        entry = self._cache.get(key)
        if entry is not None and entry.snapshot and not entry.fresh(args):
            self._forget_stale()
            entry = None
        if entry is None:
            entry = self._find_or_compile(args, key)
            if entry is None:
                return self.gm(*args)
        try:
            return self._run(entry, args)
        except SessionError as exc:  # onnxruntime failed before anything was copied back
            if not self.options.fallback:
                raise
            self._fall_back(exc)
            return self.gm(*args)

    def _signature(self, args: Sequence[Any]) -> tuple:
        key = []
        for i, a in enumerate(args):
            if i in self.frozen:
                continue
            if isinstance(a, torch.Tensor):
                if i in self._scalars:
                    key.append(a.item())
                else:
                    key.append((a.shape, a.dtype, a.device))
            else:
                key.append(a)
        return tuple(key)

    def _run(self, entry: _Entry, args: Sequence[Any]) -> Any:
        exported = entry.exported
        outs = entry.runner([args[i] for i in exported.feeds])
        if exported.mutations:
            with torch.no_grad():
                for k, i in exported.mutations:
                    args[i].copy_(outs[k])
        sizes = bind_symbols(exported.symbols, args) if exported.symbols else {}
        leaves = []
        for pos, out in enumerate(exported.outputs):
            leaves.append(self._leaf(out, outs, args, sizes, entry.out_devices[pos]))
        return pytree.tree_unflatten(leaves, exported.out_spec)

    @staticmethod
    def _leaf(out: Output, outs, args, sizes, device) -> Any:
        if out.kind == "onnx":
            value = outs[out.index]
            return value if device is None or value.device == device else value.to(device)
        if out.kind == "arg":
            return args[out.index]
        if out.kind == "size":
            return int(out.value.xreplace(sizes)) if hasattr(out.value, "xreplace") else out.value
        return out.value

    # -- compiling -------------------------------------------------------------------------

    def _find_or_compile(self, args: Sequence[Any], key: tuple) -> _Entry | None:
        for entry in self._entries:
            if entry.exported.dynamic and entry.accepts(args):
                if not entry.fresh(args):
                    self._forget_stale()
                    break
                self._cache[key] = entry
                return entry
        try:
            entry = self._compile(args)
        except Exception as exc:  # noqa: BLE001 - any failure means "run this graph eagerly"
            if not self.options.fallback:
                raise
            self._fall_back(exc)
            return None
        self._cache[key] = entry
        self._entries.append(entry)
        return entry

    def _compile(self, args: Sequence[Any]) -> _Entry:
        stats = CompileStats(compilations=self.stats.compilations + 1, exports=self.stats.exports)
        options = self.options
        store = self._cached(args, stats)
        if isinstance(store, _Entry):
            entry = store
        else:
            entry = self._compile_fresh(args, stats, store)
        # random numbers differ from PyTorch's: there is nothing to compare with eager
        if options.check_on_first_call and not self._checked and not entry.random:
            start = time.perf_counter()
            self._check(entry, args)
            stats.check = time.perf_counter() - start
            self._checked = True
        self.stats = stats
        return entry

    def _cached(
        self, args: Sequence[Any], stats: CompileStats
    ) -> _Entry | tuple[compile_cache.CompileCache, str] | None:
        """The persistent cache's entry for this call, opened (a hit); else where to store
        the compiled model, ``(cache, key)``, or None when the cache is off."""
        if not compile_cache.enabled(self.options):
            return None
        start = time.perf_counter()
        cache = compile_cache.CompileCache(compile_cache.cache_root(self.options))
        try:
            key = compile_cache.compile_key(
                self.gm, args, frozen=self.frozen, scalars=self._scalars, options=self.options
            )
        except Exception as exc:  # noqa: BLE001 - e.g. a tensor whose bytes cannot be read
            warnings.warn(
                f"graphopt compile cache: cannot key {self.name} ({type(exc).__name__}: {exc}); "
                "compiling it without the cache",
                compile_cache.GraphoptCacheWarning,
                stacklevel=4,
            )
            return None
        hit = cache.load(key)
        stats.lookup = time.perf_counter() - start
        stats.cache = "miss"
        if hit is None:
            return cache, key
        exported = hit.exported
        feeds = [args[i] for i in exported.feeds]
        device = _device_of(feeds, args, exported.frozen)
        providers = providers_for(device, self.options)  # fails as a miss would: no discard
        start = time.perf_counter()
        try:
            runner = OrtRunner(hit.model_path, device, self.options, providers=providers)
        except SessionError as exc:
            cache.discard(key, f"onnxruntime cannot load entry {key}: {exc}")
            return cache, key
        stats.session = time.perf_counter() - start
        stats.cache = "hit"
        stats.nodes_before, stats.nodes_after = hit.nodes_before, hit.nodes_after
        return self._entry(exported, runner, feeds, args, hit.random)

    def _compile_fresh(
        self,
        args: Sequence[Any],
        stats: CompileStats,
        store: tuple[compile_cache.CompileCache, str] | None,
    ) -> _Entry:
        """Export, optimize, verify and open a session (and store it when ``store``)."""
        options = self.options
        start = time.perf_counter()
        exported = export_graph(
            self.gm, args, frozen=self.frozen, scalars=self._scalars, dynamic=options.dynamic
        )
        stats.export = time.perf_counter() - start
        stats.exports += 1
        stats.nodes_before = stats.nodes_after = len(exported.model.graph.node)
        feeds = [args[i] for i in exported.feeds]
        random = draws_random_numbers(exported.model)
        device = _device_of(feeds, args, exported.frozen)
        providers = providers_for(device, options)
        runner = _open_session(exported, feeds, device, providers, random, options, stats, store)
        return self._entry(exported, runner, feeds, args, random)

    def _entry(
        self,
        exported: ExportedGraph,
        runner: OrtRunner,
        feeds: Sequence[torch.Tensor],
        args: Sequence[Any],
        random: bool,
    ) -> _Entry:
        return _Entry(
            exported=exported,
            runner=runner,
            dtypes=tuple(t.dtype for t in feeds),
            devices=tuple(t.device for t in feeds),
            out_devices=self._output_devices(exported),
            snapshot=[(i, args[i].data_ptr(), _version(args[i])) for i in exported.frozen],
            random=random,
        )

    def _output_devices(self, exported: ExportedGraph) -> tuple[torch.device | None, ...]:
        devices = []
        for out, meta in zip(exported.outputs, self._out_meta):
            ok = out.kind == "onnx" and isinstance(meta, torch.Tensor)
            devices.append(meta.device if ok else None)
        return tuple(devices)

    def _check(self, entry: _Entry, args: Sequence[Any]) -> None:
        """Compare the compiled graph with eager on copies of ``args``; raise on mismatch."""
        mutated = {i for _, i in entry.exported.mutations}
        eager_args = [a.clone() if i in mutated else a for i, a in enumerate(args)]
        ours_args = [a.clone() if i in mutated else a for i, a in enumerate(args)]
        with torch.no_grad():
            expected = pytree.tree_leaves(self.gm(*eager_args))
            got = pytree.tree_leaves(self._run(entry, ours_args))
        pairs = list(zip(expected, got)) + [(eager_args[i], ours_args[i]) for i in mutated]
        if len(expected) != len(got):
            raise CheckMismatchError(f"{len(got)} outputs, eager gives {len(expected)}")
        for k, (e, g) in enumerate(pairs):
            why = mismatch(e, g, self.options.rtol, self.options.atol)
            if why is not None:
                raise CheckMismatchError(f"output {k} differs from eager: {why}")

    def _fall_back(self, exc: BaseException) -> None:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        self.fallback_reason = reason
        warnings.warn(
            f"graphopt: running {self.name} eagerly: {reason}",
            GraphoptFallbackWarning,
            stacklevel=3,
        )

    def _forget_stale(self) -> None:
        """The frozen weights changed: drop every compiled model (all froze the old ones)."""
        self._cache.clear()
        self._entries.clear()
        warnings.warn(
            f"graphopt: the parameters frozen into {self.name} changed; compiling it again "
            "(compile for training, or call torch.compiler.reset(), to avoid recompiling)",
            GraphoptRecompileWarning,
            stacklevel=3,
        )


def _open_session(
    exported: ExportedGraph,
    feeds: Sequence[torch.Tensor],
    device: torch.device,
    providers: Sequence[Any],
    random: bool,
    options: BackendOptions,
    stats: CompileStats,
    store: tuple[compile_cache.CompileCache, str] | None = None,
) -> OrtRunner:
    """Optimize the exported model, open its session and verify it (steps 2-4 of the module
    docstring); ``stats`` receives the seconds each step took. With ``store`` (a compile
    cache and key), the optimized model is written straight into a staging folder of the
    cache and becomes its entry once verified.

    The models travel through files with external data: the optimizer then streams the
    weights instead of copying them in memory, and onnxruntime loads a file several times
    faster than serialized bytes (seconds for a model of BERT-base's size). The exported
    model's weights leave memory once saved."""
    with tempfile.TemporaryDirectory(prefix="graphopt-torch-", ignore_cleanup_errors=True) as tmp:
        source = os.path.join(tmp, "exported.onnx")
        start = time.perf_counter()
        save_with_external_data(exported.model, source)
        exported.drop_weights()
        stats.save = time.perf_counter() - start
        verify = options.optimize and options.verify
        reference = None
        if verify and not random:
            # the reference outputs need only the export: compute them in a thread while
            # the optimizer (Python, holding the GIL) runs; onnxruntime releases the GIL
            reference = REFERENCE_POOL.submit(
                reference_outputs, source, exported, feeds, is_cuda(providers[0])
            )
        staging = store[0].stage() if store is not None else None
        try:
            path = source
            if options.optimize:
                start = time.perf_counter()
                folder = str(staging) if staging is not None else tmp
                path = os.path.join(folder, compile_cache.MODEL_FILE)
                report = optimizer.optimize_file(
                    source,
                    path,
                    optimizer.OptimizeOptions(
                        search=options.search, time_limit=float(options.time_limit),
                        cost_model=options.cost_model, guard=options.guard, check=False,
                        rtol=options.rtol, atol=options.atol,
                    ),
                    external_data=True,
                )  # fmt: skip
                stats.optimize = time.perf_counter() - start
                stats.nodes_after = report.after.nodes
            start = time.perf_counter()
            runner = OrtRunner(path, device, options, providers=providers)
            stats.session = time.perf_counter() - start
            start = time.perf_counter()
            if reference is not None:
                verify_outputs(reference.result(), runner, feeds, options)
            elif verify:  # random numbers: compare seeded copies instead
                verify_seeded(source, path, exported, feeds, options, runner.on_cuda)
            stats.verify = time.perf_counter() - start
            if staging is not None and store is not None:
                start = time.perf_counter()
                if not options.optimize:  # the entry is the exported model itself
                    save_with_external_data(
                        onnx.load(source), str(staging / compile_cache.MODEL_FILE)
                    )
                store[0].commit(
                    staging, store[1], exported, random=random,
                    nodes_before=stats.nodes_before, nodes_after=stats.nodes_after,
                )  # fmt: skip
                staging = None
                stats.store = time.perf_counter() - start
        finally:
            if reference is not None:
                concurrent.futures.wait([reference])  # it reads files about to go
            if staging is not None:  # failed before the entry was complete
                shutil.rmtree(staging, ignore_errors=True)
    return runner


def _device_of(
    feeds: Sequence[torch.Tensor], args: Sequence[Any], frozen: Sequence[int]
) -> torch.device:
    """The device the model runs on: CUDA if any tensor it reads is there, else CPU."""
    tensors = list(feeds) + [args[i] for i in frozen]
    for t in tensors:
        if t.device.type != "cpu":
            return t.device
    return torch.device("cpu")
