"""Options of the ``graphopt`` torch.compile backend.

They arrive through ``torch.compile(model, backend="graphopt", options={...})`` (torch hands
the dict to the backend as its ``options`` keyword) or as keywords of a partial application
of :func:`optimizer.torch_backend.graphopt_backend`. Every option is documented in
docs/torch.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from optimizer.errors import GraphoptError
from optimizer.passes import SEARCH_ALGORITHMS

#: Environment variable that turns on debug mode (the first-call comparison with eager).
DEBUG_ENV = "GRAPHOPT_DEBUG"
#: ``device`` values: follow the inputs, or force one.
DEVICES = ("auto", "cpu", "cuda")
#: Cost models the optimizer offers (optimizer.api.COST_MODELS, repeated to fail early).
COST_MODELS = ("analytic", "measured")
#: onnxruntime graph optimization levels of the inference session.
ORT_LEVELS = ("disable", "basic", "extended", "all")


class BackendOptionsError(GraphoptError):
    """An option given to the graphopt backend is unknown or has a bad value."""


@dataclass(frozen=True)
class BackendOptions:
    """Every option of the graphopt backend.

    - ``search``: search algorithm of the optimizer (``optimizer.passes.SEARCH_ALGORITHMS``).
    - ``cost_model``: what the search minimises (``analytic`` or ``measured``).
    - ``time_limit``: seconds the search may take per compiled graph.
    - ``guard``: time the rewritten model against the clean-up result and keep the faster
      (adds a few seconds of timing per graph; off by default to keep compiling quick).
    - ``device``: ``auto`` runs on the inputs' device; ``cpu``/``cuda`` force one.
    - ``providers``: onnxruntime execution providers, overriding ``device`` (names, or
      ``(name, provider_options)`` pairs), e.g. ``["CUDAExecutionProvider"]``.
    - ``threads``: onnxruntime intra-op threads (default: ``torch.get_num_threads()``).
    - ``ort_level``: onnxruntime's own graph optimization level for the session.
    - ``spinning``: let onnxruntime's idle threads spin (lower latency on a machine of one's
      own; off by default, because spinning threads take the cores PyTorch's threads and
      other sessions need between calls).
    - ``verify``: check the optimized ONNX model against the exported one on onnxruntime,
      on the first call's inputs, before using it (graphopt's guarantee; leave it on).
    - ``check``: on the first call, also compare the outputs with eager PyTorch; ``None``
      means "in debug mode only" (``debug=True`` or ``GRAPHOPT_DEBUG=1``).
    - ``rtol``/``atol``: tolerances of both checks: an output matches when
      ``|got - expected| <= atol + rtol * |expected|``. Both compare what will run (the
      optimized model with onnxruntime's own fusions) with an unfused reference, so they
      allow float32 reordering (``graphopt optimize``'s 1e-4/1e-5 compare two unfused models).
    - ``dynamic``: export symbolic dimensions where dynamo traced them (``False``: one
      static model per input shape).
    - ``fallback``: on a graph that cannot be exported, optimized or run, warn once and run it
      eagerly (``False``: raise instead, for debugging).
    - ``debug``: debug mode (turns ``check`` on).
    - ``optimize``: run graphopt's optimizer (``False``: run the exported model as is; a
      baseline for measurements).
    - ``training``: ``auto`` uses aot_autograd when a graph input requires grad and grad
      mode is on; ``never`` always compiles for inference (no gradients flow).
    - ``cache``: keep compiled models in the persistent compile cache and reuse them in later
      processes (:mod:`optimizer.torch_backend.cache`; ``$GRAPHOPT_TORCH_CACHE=0`` turns it
      off too).
    - ``cache_dir``: the compile cache's folder (default ``$GRAPHOPT_TORCH_CACHE_DIR``, else
      ``torch-compile/`` in graphopt's user cache folder).
    """

    search: str = "auto"
    cost_model: str = "analytic"
    time_limit: float = 2.0
    guard: bool = False
    device: str = "auto"
    providers: tuple[Any, ...] | None = None
    threads: int | None = None
    ort_level: str = "all"
    spinning: bool = False
    verify: bool = True
    check: bool | None = None
    rtol: float = 1e-3
    atol: float = 1e-4
    dynamic: bool = True
    fallback: bool = True
    debug: bool = False
    optimize: bool = True
    training: str = "auto"
    cache: bool = True
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        _one_of("search", self.search, SEARCH_ALGORITHMS)
        _one_of("cost_model", self.cost_model, COST_MODELS)
        _one_of("device", self.device, DEVICES)
        _one_of("ort_level", self.ort_level, ORT_LEVELS)
        _one_of("training", self.training, ("auto", "never"))
        if not (isinstance(self.time_limit, int | float) and self.time_limit > 0):
            raise BackendOptionsError(f"option time_limit must be > 0, got {self.time_limit!r}")
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and value >= 0):
                raise BackendOptionsError(f"option {name} must be >= 0, got {value!r}")
        if not isinstance(self.cache, bool):
            raise BackendOptionsError(f"option cache must be True or False, got {self.cache!r}")
        if self.cache_dir is not None and not isinstance(self.cache_dir, str | os.PathLike):
            raise BackendOptionsError(f"option cache_dir must be a path, got {self.cache_dir!r}")
        if self.threads is not None and not (isinstance(self.threads, int) and self.threads > 0):
            raise BackendOptionsError(
                f"option threads must be a positive int, got {self.threads!r}"
            )
        if self.providers is not None:
            if isinstance(self.providers, str) or not isinstance(self.providers, Sequence):
                raise BackendOptionsError(
                    f"option providers must be a list of provider names, got {self.providers!r}"
                )
            object.__setattr__(self, "providers", tuple(_provider(p) for p in self.providers))

    @property
    def check_on_first_call(self) -> bool:
        """Whether the first call compares with eager (``check``, else debug mode)."""
        if self.check is not None:
            return self.check
        return self.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _one_of(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise BackendOptionsError(
            f"option {name} must be one of {', '.join(allowed)}; got {value!r}"
        )


def _provider(p: Any) -> Any:
    if isinstance(p, str):
        return p
    if (
        isinstance(p, Sequence)
        and len(p) == 2
        and isinstance(p[0], str)
        and isinstance(p[1], Mapping)
    ):
        return (p[0], dict(p[1]))
    raise BackendOptionsError(f"bad provider {p!r}: expected a name or a (name, options) pair")


#: The option names, for error messages.
OPTION_NAMES = tuple(f.name for f in fields(BackendOptions))


def parse_options(
    options: BackendOptions | Mapping[str, Any] | None = None, **kwargs: Any
) -> BackendOptions:
    """Merge ``options`` (a dict or :class:`BackendOptions`) and keyword options.

    Unknown names raise :class:`BackendOptionsError` listing the known ones.
    """
    base = options if isinstance(options, BackendOptions) else BackendOptions()
    given = dict(options) if isinstance(options, Mapping) else {}
    given.update(kwargs)
    unknown = sorted(k for k in given if k not in OPTION_NAMES)
    if unknown:
        raise BackendOptionsError(
            f"unknown graphopt backend option {unknown[0]!r}; known: {', '.join(OPTION_NAMES)}"
        )
    return replace(base, **given) if given else base
