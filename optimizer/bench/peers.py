"""The peers of `graphopt bench`: the ONNX optimizers users pick today, each run in isolation.

A peer is run by :func:`run_peer` in a child process (``python -m optimizer.bench.peers``), so
that a segfault, abort or out-of-memory kill in its C++ code is recorded as an outcome instead
of killing the benchmark. The child imports the peer, loads the model, times only the peer's
optimize call (``time.perf_counter``), saves the result atomically (a temporary folder beside
the destination, then a rename; external data beside it when the model is over protobuf's 2 GB
limit) and reports on stdout one line::

    GRAPHOPT-PEER-RESULT {"peer": "onnxsim", "status": "ok", "seconds": 0.0123, "error": null}

(``seconds`` is null unless ``status`` is ok; ``error`` is one line, null when ok; the status
is one of ok, failed, unavailable: crashes and timeouts are what the parent sees when no such
line comes.) Everything a peer prints, from Python or from C++, goes to stderr: the child moves
its file descriptor 1 onto 2 before it imports the peer, and writes the result line to a saved
copy of the original stdout. The parent still takes the *last* line with the prefix.

Test hook: the child (never the parent) reads the environment variable
``GRAPHOPT_BENCH_PEER_TEST_HOOK``, which simulates a misbehaving peer: ``abort`` (``os.abort()``
in the optimize call), ``segfault`` (a read of address 0), ``abort-saving`` (``os.abort()`` once
the output is half written), ``hang`` (sleep in the optimize call, after starting a grandchild
and writing both process ids to the file named by ``GRAPHOPT_BENCH_PEER_TEST_HOOK_PIDFILE``),
``raise`` (a Python exception in the optimize call), ``unimportable`` (the peer's import fails),
``exit`` (exit with status 3 and no result) and ``noise`` (print junk to stdout, then run
normally). The hidden peer ``test-peer`` (never listed) returns its input unchanged, so the hook
needs no third-party optimizer.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from optimizer.errors import GraphoptError

#: Prefix of the one result line the child prints on stdout.
RESULT_PREFIX = "GRAPHOPT-PEER-RESULT "
#: Environment variable read only by the child to simulate a misbehaving peer (tests).
TEST_HOOK_ENV = "GRAPHOPT_BENCH_PEER_TEST_HOOK"
#: How a user installs the peers.
INSTALL_HINT = "pip install 'graphopt[bench]'"
#: Every status a :class:`PeerOutcome` can have.
STATUSES = ("ok", "unavailable", "failed", "crashed", "timeout", "skipped")
#: Models at least this big are saved with external data (protobuf cannot serialize 2 GB);
#: the same threshold as :data:`optimizer.runtime.PROTO_SIZE_LIMIT`, kept here so that the
#: child does not import onnxruntime before the peer does.
PROTO_SIZE_LIMIT = int(1.8 * 2**30)
#: Keys of the ``transformer`` description (see :func:`run_peer`).
TRANSFORMER_KEYS = ("model_type", "num_heads", "hidden_size")

_MODULE = "optimizer.bench.peers"
_ERROR_CHARS = 300  # an outcome's error stays one readable line

#: A peer's optimize call: ModelProto in, ModelProto out (the only part that is timed).
OptimizeFn = Callable[[Any], Any]


class PeerCheckFailed(Exception):
    """A peer's own self-check rejected its output (recorded as ``failed``)."""


@dataclass(frozen=True)
class Peer:
    """One optimizer graphopt is compared with.

    ``prepare(transformer)`` runs in the child: it imports the peer (an ``ImportError`` there
    means *unavailable*) and returns the optimize call to time.
    """

    name: str
    packages: tuple[str, ...]  # what to pip install
    modules: tuple[str, ...]  # top-level import names that must be present
    description: str
    ort_only: bool  # its output contains com.microsoft ops: runs only on onnxruntime
    prepare: Callable[[dict[str, Any] | None], OptimizeFn] = field(repr=False, compare=False)
    transformer_only: bool = False

    def applies_to(self, transformer: Mapping[str, Any] | None) -> bool:
        """Whether the peer applies to a model: transformer-only peers need a description."""
        return transformer is not None or not self.transformer_only

    def is_available(self) -> bool:
        """Whether the peer's modules are installed (found, not imported: importing is the
        child's job, since a broken native extension may crash)."""
        try:
            return all(importlib.util.find_spec(m) is not None for m in self.modules)
        except (ImportError, ValueError):
            return False

    def version(self) -> str | None:
        """The installed version of the peer's first package, or None when not installed."""
        for dist in self.packages:
            with contextlib.suppress(metadata.PackageNotFoundError):
                return metadata.version(dist)
        return None


@dataclass(frozen=True)
class PeerOutcome:
    """What happened when a peer ran on one model.

    ``seconds`` is the optimize call's time (None unless ok); ``error`` is one line (None when
    ok); ``path`` is the written model (None unless ok).
    """

    peer: str
    status: str
    seconds: float | None = None
    error: str | None = None
    path: Path | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"unknown peer status {self.status!r}")

    @property
    def ok(self) -> bool:
        """True when the peer produced a model."""
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        """The outcome as JSON-ready data."""
        return {
            "peer": self.peer,
            "status": self.status,
            "seconds": self.seconds,
            "error": self.error,
            "path": None if self.path is None else str(self.path),
        }


# ---------------------------------------------------------------------------------------------
# The peers (their prepare functions run in the child only)
# ---------------------------------------------------------------------------------------------


def _prepare_onnxsim(transformer: dict[str, Any] | None) -> OptimizeFn:
    import onnxsim

    # onnxsim >= 0.8 tries a z3 proof of its result by default (up to 10 s, even on tiny
    # models, ~100x the simplification itself) and never changes the model with it: timing it
    # would measure onnxsim's verifier, not its optimizer. A user's explicit setting wins.
    os.environ.setdefault("ONNXSIM_CERTIFY", "0")

    def run(model):
        # Library defaults otherwise; check_n=0 means its check is onnx's checker.
        simplified, ok = onnxsim.simplify(model)
        if not ok:
            raise PeerCheckFailed("onnxsim's own check rejected the simplified model")
        return simplified

    return run


def _prepare_onnxoptimizer(transformer: dict[str, Any] | None) -> OptimizeFn:
    import onnxoptimizer

    passes = onnxoptimizer.get_fuse_and_elimination_passes()
    return lambda model: onnxoptimizer.optimize(model, passes)


def _prepare_onnxscript(transformer: dict[str, Any] | None) -> OptimizeFn:
    import onnxscript.optimizer

    # Constant folding, the default rewrite rules, unused-node removal, CSE (onnxscript 0.7).
    return onnxscript.optimizer.optimize


def _prepare_ort_transformers(transformer: dict[str, Any] | None) -> OptimizeFn:
    from onnxruntime.transformers.optimizer import MODEL_TYPES, optimize_model

    spec = dict(transformer or {})
    if spec.get("model_type") not in MODEL_TYPES:
        # optimize_model itself only logs a warning and returns the model unchanged.
        raise ValueError(
            f"unknown model_type {spec.get('model_type')!r}: expected one of "
            + ", ".join(sorted(MODEL_TYPES))
        )

    def run(model):
        # opt_level=0: only the Python fusions, so onnxruntime's own graph optimizer (which
        # the benchmark measures separately) adds nothing; use_gpu False: CPU-valid ops.
        optimized = optimize_model(
            model,
            model_type=spec["model_type"],
            num_heads=spec.get("num_heads", 0),
            hidden_size=spec.get("hidden_size", 0),
            opt_level=0,
            use_gpu=False,
        )
        # What its save_model_to_file does before writing: fusions append nodes at the end,
        # and the com.microsoft opset import is added only there.
        optimized.topological_sort()
        proto = optimized.model
        uses_ms = any(n.domain == "com.microsoft" for n in proto.graph.node)
        if uses_ms and not any(o.domain == "com.microsoft" for o in proto.opset_import):
            proto.opset_import.add(domain="com.microsoft", version=1)
        return proto

    return run


PEERS: OrderedDict[str, Peer] = OrderedDict(
    (p.name, p)
    for p in (
        Peer(
            "onnxsim",
            ("onnxsim",),
            ("onnxsim",),
            "onnx-simplifier: constant folding through onnxruntime plus onnxoptimizer's passes",
            ort_only=False,
            prepare=_prepare_onnxsim,
        ),
        Peer(
            "onnxoptimizer",
            ("onnxoptimizer",),
            ("onnxoptimizer",),
            "onnxoptimizer: the default fuse-and-eliminate C++ passes",
            ort_only=False,
            prepare=_prepare_onnxoptimizer,
        ),
        Peer(
            "onnxscript",
            ("onnxscript",),
            ("onnxscript",),
            "onnxscript.optimizer.optimize: constant folding, default rewrite rules, CSE",
            ort_only=False,
            prepare=_prepare_onnxscript,
        ),
        Peer(
            "ort-transformers",
            ("onnxruntime", "onnxruntime-gpu"),
            ("onnxruntime",),
            "onnxruntime.transformers optimize_model: Attention, SkipLayerNorm, Gelu fusions",
            ort_only=True,
            prepare=_prepare_ort_transformers,
            transformer_only=True,
        ),
    )
)


def _prepare_test_peer(transformer: dict[str, Any] | None) -> OptimizeFn:
    return lambda model: model


#: Peers :func:`run_peer` accepts but never lists: a do-nothing peer for the test hook.
_HIDDEN_PEERS = {
    "test-peer": Peer(
        "test-peer", (), (), "test only: returns its input", False, prepare=_prepare_test_peer
    )
}


def get_peer(name: str) -> Peer:
    """The registered peer called ``name``; :class:`GraphoptError` names the known ones."""
    try:
        return PEERS[name] if name in PEERS else _HIDDEN_PEERS[name]
    except KeyError:
        raise GraphoptError(f"unknown peer {name!r}: expected one of {', '.join(PEERS)}") from None


def available_peers() -> list[str]:
    """Names of the registered peers whose packages are installed, in registry order."""
    return [name for name, peer in PEERS.items() if peer.is_available()]


def peer_versions() -> dict[str, str | None]:
    """Installed version of each peer's package (None when not installed)."""
    return {name: peer.version() for name, peer in PEERS.items()}


# ---------------------------------------------------------------------------------------------
# Parent side
# ---------------------------------------------------------------------------------------------


def _check_transformer(transformer: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if transformer is None:
        return None
    unknown = set(transformer) - set(TRANSFORMER_KEYS)
    if unknown:
        raise GraphoptError(
            f"unknown transformer key(s) {', '.join(sorted(unknown))}: expected "
            + ", ".join(TRANSFORMER_KEYS)
        )
    if not isinstance(transformer.get("model_type"), str) or not transformer["model_type"]:
        raise GraphoptError("a transformer description needs a model_type such as 'bert'")
    for key in ("num_heads", "hidden_size"):
        value = transformer.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise GraphoptError(
                f"transformer {key} must be an integer >= 0 (0: detect), got {value!r}"
            )
    return dict(transformer)


def _one_line(text: str) -> str:
    line = next((s.strip() for s in text.strip().splitlines() if s.strip()), "")
    return line if len(line) <= _ERROR_CHARS else line[: _ERROR_CHARS - 3] + "..."


def _last_line(text: str) -> str:
    lines = [s.strip() for s in text.splitlines() if s.strip()]
    return _one_line(lines[-1]) if lines else ""


def _temp_prefix(dst: Path) -> str:
    return f".{dst.name}.graphopt-peer-"


def _remove_leftovers(dst: Path) -> None:
    """Remove the temporary folders a killed child left beside ``dst``."""
    with contextlib.suppress(OSError):
        for leftover in dst.parent.glob(_temp_prefix(dst) + "*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The child must import this very package, not another installed copy of graphopt.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _reap(proc: subprocess.Popen) -> None:
    """Wait for a killed child; do not hang on a descendant that left the group and still
    holds its stdout open."""
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        if proc.stdout is not None:
            proc.stdout.close()
        proc.wait()


def _parse_result(stdout: str) -> dict[str, Any] | None:
    lines = [s for s in stdout.splitlines() if s.startswith(RESULT_PREFIX)]
    if not lines:
        return None
    try:
        result = json.loads(lines[-1][len(RESULT_PREFIX) :])
    except json.JSONDecodeError:
        return None
    return result if isinstance(result, dict) else None


def _crash_message(returncode: int, stderr: str) -> str:
    if returncode < 0:
        try:
            what = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            what = f"killed by signal {-returncode}"
        if returncode == -signal.SIGKILL:
            what += " (out of memory?)"
    elif returncode > 0:
        what = f"exited with status {returncode} without a result"
    else:
        what = "exited without a result"
    last = _last_line(stderr)
    return f"{what}: {last}" if last else what


def run_peer(
    name: str,
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    transformer: Mapping[str, Any] | None = None,
    timeout: float = 600,
) -> PeerOutcome:
    """Run peer ``name`` on the model file ``src`` and write its result to ``dst``.

    The peer runs in a child process of its own session; nothing it does (exceptions,
    signals, hangs) escapes as an exception here: it becomes the returned outcome's status.
    ``transformer`` describes a transformer model for the peers that need it
    (``model_type``, and optionally ``num_heads``, ``hidden_size``; 0 means detect); a peer
    that needs it and lacks it is ``skipped``. After ``timeout`` seconds the child's whole
    process group is killed. ``dst`` is written only when the peer succeeds, by a rename.

    Bad arguments (unknown peer, malformed ``transformer``, ``dst`` equal to ``src``) raise
    :class:`GraphoptError`.
    """
    peer = get_peer(name)
    spec = _check_transformer(transformer)
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise GraphoptError(f"peer output {dst} would overwrite its input model")
    if not peer.applies_to(spec):
        why = "applies only to transformer models (give model_type, num_heads, hidden_size)"
        return PeerOutcome(name, "skipped", error=why)
    if not peer.is_available():
        missing = ", ".join(peer.packages[:1])
        return PeerOutcome(name, "unavailable", error=f"{missing} is not installed; {INSTALL_HINT}")
    if not src.is_file():
        return PeerOutcome(name, "failed", error=f"model file not found: {src}")

    cmd = [sys.executable, "-m", _MODULE, name, str(src), str(dst)]
    if spec is not None:
        cmd += ["--transformer", json.dumps(spec)]
    with tempfile.TemporaryFile() as err_file:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err_file,
            env=_child_env(),
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            _reap(proc)
            _remove_leftovers(dst)
            return PeerOutcome(name, "timeout", error=f"no result after {timeout:g} s; killed")
        except BaseException:  # KeyboardInterrupt: never leave the child running
            _kill_group(proc)
            proc.wait()
            _remove_leftovers(dst)
            raise
        err_file.seek(0)
        stderr = err_file.read().decode("utf-8", errors="replace")
    result = _parse_result(stdout.decode("utf-8", errors="replace"))
    if result is None or result.get("status") not in ("ok", "failed", "unavailable"):
        _remove_leftovers(dst)
        return PeerOutcome(name, "crashed", error=_crash_message(proc.returncode, stderr))
    if result["status"] == "ok":
        return PeerOutcome(name, "ok", seconds=float(result["seconds"]), path=dst)
    _remove_leftovers(dst)
    return PeerOutcome(name, result["status"], error=_one_line(str(result.get("error") or "")))


# ---------------------------------------------------------------------------------------------
# Child side
# ---------------------------------------------------------------------------------------------


def save_model(model: Any, dst: str | os.PathLike, *, limit: int = PROTO_SIZE_LIMIT) -> None:
    """Save ``model`` to ``dst`` atomically, with external data beside it at ``limit`` bytes.

    The files are written in a temporary folder beside ``dst`` and renamed into place (the
    data file first), so ``dst`` is never half-written. External data goes to
    ``<dst name>.data``.
    """
    import onnx

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(dst), dir=dst.parent))
    try:
        staged, data_name = tmp / dst.name, dst.name + ".data"
        if model.ByteSize() >= limit:
            onnx.save_model(
                model,
                staged,
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                convert_attribute=True,
            )
            _test_hook("abort-saving")
            if (tmp / data_name).exists():
                os.replace(tmp / data_name, dst.parent / data_name)
        else:
            onnx.save_model(model, staged)
            _test_hook("abort-saving")
        os.replace(staged, dst)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _test_hook(point: str) -> None:
    """Simulate a misbehaving peer at ``point`` when the test hook asks for it (see module doc)."""
    hook = os.environ.get(TEST_HOOK_ENV, "")
    if point == "import" and hook == "unimportable":
        raise ModuleNotFoundError("No module named 'graphopt_test_missing_peer'")
    if point == "optimize" and hook == "abort":
        print("test hook: aborting", file=sys.stderr, flush=True)
        os.abort()
    if point == "optimize" and hook == "segfault":
        import ctypes

        ctypes.string_at(0)  # reads address 0: SIGSEGV
    if point == "optimize" and hook == "hang":
        # A grandchild in the same process group, so that tests see the whole group killed.
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        pid_file = os.environ.get(TEST_HOOK_ENV + "_PIDFILE")
        if pid_file:
            Path(pid_file).write_text(f"{os.getpid()} {sleeper.pid}")
        time.sleep(3600)
    if point == "optimize" and hook == "raise":
        raise RuntimeError("test hook: simulated peer failure\nwith a second line")
    if point == "optimize" and hook == "exit":
        print("test hook: exiting with status 3", file=sys.stderr, flush=True)
        os._exit(3)
    if point == "optimize" and hook == "noise":
        print(RESULT_PREFIX + '{"status": "ok", "seconds": -1}', flush=True)
        os.write(1, b"noise written to fd 1 by native code\n")
    if point == hook == "abort-saving":
        os.abort()


def _child(name: str, src: str, dst: str, transformer: dict[str, Any] | None) -> dict[str, Any]:
    """Run one peer in this (child) process and return its result record."""
    result: dict[str, Any] = {"peer": name, "status": "failed", "seconds": None, "error": None}
    try:
        _test_hook("import")
        optimize = get_peer(name).prepare(transformer)
    except ImportError as exc:
        why = _one_line(f"{exc}") or type(exc).__name__
        return result | {"status": "unavailable", "error": f"{why}; {INSTALL_HINT}"}
    except Exception as exc:  # a peer that refuses its settings (say, an unknown model_type)
        return result | {"error": _describe_exception(exc)}
    import onnx

    try:
        model = onnx.load(src)
    except Exception as exc:
        return result | {"error": f"cannot load {src}: {_one_line(str(exc)) or type(exc).__name__}"}
    try:
        start = time.perf_counter()
        _test_hook("optimize")
        optimized = optimize(model)
        seconds = time.perf_counter() - start
        if not isinstance(optimized, onnx.ModelProto):
            raise PeerCheckFailed(f"returned {type(optimized).__name__}, not a ModelProto")
        save_model(optimized, dst)
    except Exception as exc:
        return result | {"error": _describe_exception(exc)}
    return result | {"status": "ok", "seconds": seconds}


def _describe_exception(exc: BaseException) -> str:
    first = _one_line(str(exc))
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _main(argv: list[str] | None = None) -> None:
    # Peers print progress from Python and C++; keep fd 1 for the result line only.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    parser = argparse.ArgumentParser(prog=f"python -m {_MODULE}", description=__doc__)
    parser.add_argument("peer", choices=[*PEERS, *_HIDDEN_PEERS])
    parser.add_argument("src")
    parser.add_argument("dst")
    parser.add_argument("--transformer", type=json.loads, default=None)
    args = parser.parse_args(argv)
    result = _child(args.peer, args.src, args.dst, args.transformer)
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(result_fd, (RESULT_PREFIX + json.dumps(result) + "\n").encode())
    # Skip interpreter teardown: some native extensions crash in their destructors at exit,
    # which would turn a finished, saved result into a 'crashed' one.
    os._exit(0)


if __name__ == "__main__":
    _main()
