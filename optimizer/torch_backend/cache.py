"""Persistent compile cache of the graphopt backend (as inductor's FX graph cache).

A compiled graph costs seconds (export, optimization, verification); the same model compiled
again in a new process gives the same FX graph with the same weights, so the result is kept
on disk: the optimized ONNX model (weights as external data) and what the runner needs to call
it (:class:`~optimizer.torch_backend.export.ExportedGraph` without its model). A hit opens the
session straight from the cached files: no export, no optimization, no verification (an entry
is stored only once it passed the checks the options ask for).

**Key** (:func:`compile_key`): a SHA-256 digest of everything that decides the result:

- the FX graph: its Python code (comment lines dropped: they are source locations), and per
  node its op, target and traced value (shape with its symbols, dtype, stride, device);
  tensors the graph reads as attributes, by content;
- the call: which arguments are frozen and their bytes (parameters and buffers), the shapes,
  strides, dtypes and devices of the other tensors, the values of the specialized ones;
- the backend options that shape the model or its checks (not ``threads``, ``spinning``,
  ``check``, ``debug``, ``fallback``, nor the cache options themselves);
- graphopt (its version; its source and rule files' names, sizes and modification times),
  torch, onnx, onnxscript and onnxruntime versions, Python, the machine type, and the stored
  cost calibration.

Weights are hashed with SHA-256 (hardware-accelerated here: about 0.3 s for GPT-2 small's
124M float32 parameters, against 0.6 s for BLAKE2b and 0.3 s for SHA-1; two hashing threads
gained nothing on a busy two-core machine).

**Store**: the folder ``$GRAPHOPT_TORCH_CACHE_DIR``, else ``torch-compile/`` in graphopt's
user cache folder (``$GRAPHOPT_CACHE_DIR``, ``$XDG_CACHE_HOME/graphopt`` or
``~/.cache/graphopt``), or the backend option ``cache_dir``. ``GRAPHOPT_TORCH_CACHE=0`` or the
option ``cache=False`` turns it off. One folder per key holds ``model.onnx``,
``model.onnx.data`` and ``entry.pkl``; it is written under a temporary name and renamed into
place, so a reader sees a whole entry or none. An entry that cannot be read (damaged, truncated,
from another format) is ignored with one warning and compiled again; the fresh entry replaces
it. File sizes and the graph file's digest are checked on load; the weights file is checked by
size only (a digest would cost as much as hashing the weights again).

**Size**: after each store, the least recently used entries (a hit marks its entry used) are
removed until the cache holds at most ``$GRAPHOPT_TORCH_CACHE_SIZE_GB`` (default 10) GB; the
entry just stored always stays.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import os
import pickle
import platform
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import onnx
import torch
import torch.fx
from torch.utils import _pytree as pytree

import optimizer
from optimizer.torch_backend.export import ExportedGraph, meta_value, placeholders
from optimizer.torch_backend.options import BackendOptions

#: Bump when the layout or meaning of entries changes; older entries then miss.
FORMAT = 1
#: Environment variable naming the cache folder.
DIR_ENV = "GRAPHOPT_TORCH_CACHE_DIR"
#: Environment variable that turns the cache off when "0" (or "false", "no", "off").
ENABLE_ENV = "GRAPHOPT_TORCH_CACHE"
#: Environment variable bounding the cache's size, in GB (default :data:`DEFAULT_SIZE_GB`).
SIZE_ENV = "GRAPHOPT_TORCH_CACHE_SIZE_GB"
#: Entries weigh what the model's weights weigh (BERT-base 0.44 GB): keep at most this much.
DEFAULT_SIZE_GB = 10.0
#: A staging folder this old was left by a process that died while writing it.
_STALE_STAGING_SECONDS = 3600.0
MODEL_FILE = "model.onnx"
DATA_FILE = MODEL_FILE + ".data"
ENTRY_FILE = "entry.pkl"

#: Options that change only how a model runs or what is reported, not the model.
_RUNTIME_ONLY = frozenset(
    {"threads", "spinning", "check", "debug", "fallback", "cache", "cache_dir"}
)


class GraphoptCacheWarning(UserWarning):
    """A compile-cache entry could not be read or written (the graph is compiled anyway)."""


def enabled(options: BackendOptions) -> bool:
    """Whether the compile cache is on (option ``cache`` and ``$GRAPHOPT_TORCH_CACHE``)."""
    if not options.cache:
        return False
    return os.environ.get(ENABLE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def cache_root(options: BackendOptions) -> Path:
    """The folder holding the entries (see the module docstring)."""
    if options.cache_dir is not None:
        return Path(options.cache_dir).expanduser()
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV]).expanduser()
    from optimizer.cost.cache import cache_dir

    return cache_dir() / "torch-compile"


# -- the key ---------------------------------------------------------------------------------


def compile_key(
    gm: torch.fx.GraphModule,
    args: Sequence[Any],
    *,
    frozen: Collection[int],
    scalars: Collection[int],
    options: BackendOptions,
) -> str:
    """The cache key of compiling ``gm`` for ``args`` with ``options`` (a hex digest)."""
    h = hashlib.sha256()

    def part(*items: Any) -> None:
        h.update(repr(items).encode())
        h.update(b"\0")

    part("format", FORMAT, *_environment())
    part("options", *_model_options(options))
    code = "\n".join(ln for ln in gm.code.splitlines() if not ln.strip().startswith("#"))
    part("code", code)
    for node in gm.graph.nodes:
        part("node", node.op, node.name, _target_name(node.target), _describe(meta_value(node)))
        if node.op in ("get_attr", "call_module"):
            _hash_attribute(h, gm, str(node.target))
    nodes = placeholders(gm)
    hashed: dict[tuple, str] = {}  # the same tensor passed twice is hashed once
    for i, arg in enumerate(args):
        used = i < len(nodes) and bool(nodes[i].users)
        if isinstance(arg, torch.Tensor):
            part("arg", i, used, i in frozen, i in scalars, _describe(arg))
            if not used:
                continue
            if i in scalars:
                part("scalar", arg.item())
            elif i in frozen:
                ident = (arg.data_ptr(), arg.dtype, tuple(arg.shape), tuple(arg.stride()))
                if ident not in hashed:
                    hashed[ident] = tensor_digest(arg)
                part("frozen", hashed[ident])
        else:
            value = int(arg) if isinstance(arg, torch.SymInt) else arg
            part("arg", i, used, type(value).__name__, repr(value))
    return h.hexdigest()


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes (in row-major order), with its dtype and shape."""
    h = hashlib.sha256(repr((str(t.dtype), tuple(t.shape))).encode())
    data = t.detach()
    if data.device.type != "cpu":
        data = data.cpu()
    data = data.contiguous().reshape(-1)
    if data.numel():
        h.update(memoryview(data.view(torch.uint8).numpy()))
    return h.hexdigest()


def _target_name(target: Any) -> str:
    """A node's target by name (``str`` of a function shows its address, which differs
    from one process to the next)."""
    if isinstance(target, str):
        return target
    try:
        return torch.fx.node._get_qualified_name(target)
    except Exception:  # noqa: BLE001 - an object without a usable name
        module = getattr(target, "__module__", None) or ""
        name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
        return f"{module}.{name}" if name else type(target).__qualname__


def _describe(value: Any) -> Any:
    """What the key needs of a traced or real value: tensors by type, not content."""
    if isinstance(value, torch.Tensor):
        return (
            "tensor",
            tuple(str(s) for s in value.shape),
            tuple(str(s) for s in value.stride()),
            str(value.dtype),
            value.device.type,
            value.requires_grad,
        )
    if isinstance(value, torch.SymInt | torch.SymFloat | torch.SymBool):
        return ("sym", str(value.node.expr))
    if isinstance(value, list | tuple):
        return tuple(_describe(v) for v in value)
    if value is None or isinstance(value, int | float | bool | str):
        return value
    return type(value).__name__


def _hash_attribute(h: Any, gm: torch.fx.GraphModule, target: str) -> None:
    value: Any = gm
    for name in target.split("."):
        value = getattr(value, name, None)
    if isinstance(value, torch.Tensor):
        h.update(tensor_digest(value).encode())
    elif isinstance(value, torch.nn.Module):
        h.update(repr(value).encode())
        for name, t in sorted(value.state_dict().items()):
            h.update(name.encode() + tensor_digest(t).encode())
    else:
        h.update(repr(value).encode())


def _model_options(options: BackendOptions) -> tuple:
    return tuple(
        (f.name, repr(getattr(options, f.name)))
        for f in fields(options)
        if f.name not in _RUNTIME_ONLY
    )


@functools.cache
def _source_digest() -> str:
    """Digest of graphopt's own code and rule files (an edited checkout must miss): their
    names, sizes and modification times, as Python's own bytecode cache checks its sources
    (reading their content cost a quarter of a second per process)."""
    from optimizer.rewrite.rule import rules_dir

    h = hashlib.sha256()
    package = Path(optimizer.__file__).parent
    for root, pattern in ((package, "*.py"), (rules_dir(), "*.rules")):
        for path in sorted(root.rglob(pattern)):
            stat = path.stat()
            h.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _environment() -> tuple:
    return (
        optimizer.__version__,
        _source_digest(),
        torch.__version__,
        onnx.__version__,
        _version("onnxscript"),
        _version("onnxruntime"),
        sys.version_info[:3],
        platform.machine(),
        _calibration_digest(),
    )


@functools.cache
def _version(distribution: str) -> str | None:
    """An installed distribution's version, read from its metadata: importing onnxscript
    just to ask would cost a cache hit 0.8 s."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _calibration_digest() -> str | None:
    """The stored cost calibrations (the analytic cost model may read them)."""
    from optimizer.cost.cache import CALIBRATION_FILE, cache_dir

    try:
        return hashlib.sha256((cache_dir() / CALIBRATION_FILE).read_bytes()).hexdigest()
    except OSError:
        return None


# -- entries ---------------------------------------------------------------------------------


@dataclass
class CachedModel:
    """A cache hit: the export's description (model without weights) and the optimized
    model's file."""

    exported: ExportedGraph
    model_path: str
    random: bool
    nodes_before: int
    nodes_after: int


class CompileCache:
    """The entries under one folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def entry_dir(self, key: str) -> Path:
        return self.root / key

    def load(self, key: str) -> CachedModel | None:
        """The entry under ``key``; None when there is none, or (after one warning) when it
        cannot be read, in which case it is removed."""
        folder = self.entry_dir(key)
        if not folder.is_dir():
            return None
        try:
            with open(folder / ENTRY_FILE, "rb") as f:
                meta = pickle.load(f)
            if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta["key"] != key:
                raise ValueError("written by another version")
            for name, size in meta["sizes"].items():
                if (folder / name).stat().st_size != size:
                    raise ValueError(f"{name} has the wrong size")
            graph_bytes = (folder / MODEL_FILE).read_bytes()
            if hashlib.sha256(graph_bytes).hexdigest() != meta["graph_digest"]:
                raise ValueError(f"{MODEL_FILE} is damaged")
            skeleton = onnx.ModelProto.FromString(meta["interface"])
            described = dict(meta["exported"])
            described["out_spec"] = _load_spec(described["out_spec"])
            exported = ExportedGraph(model=skeleton, **described)
            return CachedModel(
                exported=exported,
                model_path=str(folder / MODEL_FILE),
                random=bool(meta["random"]),
                nodes_before=int(meta["nodes_before"]),
                nodes_after=int(meta["nodes_after"]),
            )
            with contextlib.suppress(OSError):
                os.utime(folder)  # used now: the last entry pruning removes
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is only a miss
            self.discard(key, f"cannot read entry {folder}: {_reason(exc)}")
            return None

    def discard(self, key: str, reason: str) -> None:
        """Warn once with ``reason`` and remove the entry (it is compiled again)."""
        warnings.warn(
            f"graphopt compile cache: {reason}; compiling again", GraphoptCacheWarning, stacklevel=2
        )
        shutil.rmtree(self.entry_dir(key), ignore_errors=True)

    def prune(self, keep: str | None = None) -> None:
        """Remove the least recently used entries beyond :func:`size_limit` (never ``keep``),
        and staging folders that dying processes left behind."""
        limit, now = size_limit(), time.time()
        entries = []
        try:
            for folder in self.root.iterdir():
                if not folder.is_dir():
                    continue
                if folder.name.startswith(".writing-"):
                    if now - folder.stat().st_mtime > _STALE_STAGING_SECONDS:
                        shutil.rmtree(folder, ignore_errors=True)
                    continue
                entries.append((folder.stat().st_mtime, folder.name, _folder_size(folder)))
        except OSError:  # another process pruning at the same time: it will finish the job
            return
        total = sum(size for _, _, size in entries)
        for _, name, size in sorted(entries):
            if total <= limit:
                break
            if name != keep:
                shutil.rmtree(self.root / name, ignore_errors=True)
                total -= size

    def stage(self) -> Path | None:
        """A fresh folder inside the cache for an entry being written (None, after a warning,
        when the cache folder cannot be written)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix=".writing-", dir=self.root))
        except OSError as exc:
            warnings.warn(
                f"graphopt compile cache: cannot write in {self.root}: {_reason(exc)}",
                GraphoptCacheWarning,
                stacklevel=2,
            )
            return None

    def commit(
        self,
        staging: Path,
        key: str,
        exported: ExportedGraph,
        *,
        random: bool,
        nodes_before: int,
        nodes_after: int,
    ) -> bool:
        """Make the staged model (``staging/model.onnx`` and its data) the entry of ``key``:
        write its description and rename the folder into place. ``exported.model`` must be the
        interface only (:meth:`ExportedGraph.drop_weights`). False (after a warning) when it
        cannot be stored; the staging folder is gone either way."""
        try:
            sizes = {}
            for p in staging.iterdir():
                if p.name.endswith(".seeded.onnx"):  # verification's seeded copy
                    p.unlink()
                elif p.is_file() and p.name != ENTRY_FILE:
                    sizes[p.name] = p.stat().st_size
            meta = {
                "format": FORMAT,
                "key": key,
                "sizes": sizes,
                "graph_digest": hashlib.sha256((staging / MODEL_FILE).read_bytes()).hexdigest(),
                "interface": exported.model.SerializeToString(),
                "exported": {
                    f.name: _dump_spec(exported.out_spec)
                    if f.name == "out_spec"
                    else getattr(exported, f.name)
                    for f in fields(exported)
                    if f.name not in ("model", "seconds")
                },
                "random": random,
                "nodes_before": nodes_before,
                "nodes_after": nodes_after,
            }
            with open(staging / ENTRY_FILE, "wb") as f:
                pickle.dump(meta, f, protocol=pickle.HIGHEST_PROTOCOL)
            target = self.entry_dir(key)
            if target.exists():  # another process stored the same key meanwhile: keep it
                return True
            os.rename(staging, target)
            self.prune(keep=key)
            return True
        except Exception as exc:  # noqa: BLE001 - a cache that cannot store is only slower
            if not self.entry_dir(key).is_dir():
                warnings.warn(
                    f"graphopt compile cache: cannot store an entry: {_reason(exc)}",
                    GraphoptCacheWarning,
                    stacklevel=2,
                )
            return False
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def size_limit() -> float:
    """The cache's size bound in bytes (``$GRAPHOPT_TORCH_CACHE_SIZE_GB``)."""
    try:
        gb = float(os.environ.get(SIZE_ENV, DEFAULT_SIZE_GB))
    except ValueError:
        gb = DEFAULT_SIZE_GB
    return max(gb, 0.0) * 1e9


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _dump_spec(spec: Any) -> tuple[str, Any]:
    """A pytree spec in a storable form: pytree's own JSON where it can write it (pickling
    a spec trips a deprecation warning of torch 2.13), else the object for pickle."""
    try:
        return ("json", pytree.treespec_dumps(spec))
    except Exception:  # noqa: BLE001 - a container type pytree cannot serialize
        return ("object", spec)


def _load_spec(stored: tuple[str, Any]) -> Any:
    kind, value = stored
    return pytree.treespec_loads(value) if kind == "json" else value


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__
