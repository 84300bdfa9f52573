"""The ``graphopt`` torch.compile backend: FX graph -> verified optimization -> onnxruntime.

>>> model = torch.compile(model, backend="graphopt")                        # doctest: +SKIP
>>> model = torch.compile(model, backend="graphopt",
...                       options={"time_limit": 2.0, "check": True})       # doctest: +SKIP

Installed, the package registers the backend through the ``torch_dynamo_backends`` entry
point, so ``torch._dynamo.list_backends()`` lists it; from a source checkout call
:func:`register` once, or pass :func:`graphopt_backend` itself as ``backend=``.

Inference (grad mode off, or no input requiring grad): parameters and buffers are frozen into
initializers, the graph is exported to ONNX, optimized, verified and run by onnxruntime on
the inputs' device (:mod:`.compiled`). Training: through aot_autograd, forward and backward
graphs each compiled the same way (:mod:`.training`). Options: :mod:`.options`; the whole
story in docs/torch.md.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.fx

from optimizer.torch_backend.compiled import (
    CompiledGraph,
    GraphoptFallbackWarning,
    GraphoptRecompileWarning,
)
from optimizer.torch_backend.export import ExportError, placeholders
from optimizer.torch_backend.options import (
    BackendOptions,
    BackendOptionsError,
    parse_options,
)

__all__ = [
    "BACKEND_NAME",
    "BackendOptions",
    "BackendOptionsError",
    "CompiledGraph",
    "ExportError",
    "GraphoptFallbackWarning",
    "GraphoptRecompileWarning",
    "graphopt_backend",
    "register",
    "static_inputs",
]

#: The name torch.compile knows the backend by.
BACKEND_NAME = "graphopt"

_counter = itertools.count(1)


def graphopt_backend(
    gm: torch.fx.GraphModule,
    example_inputs: Sequence[Any],
    *,
    options: BackendOptions | Mapping[str, Any] | None = None,
    mode: str | None = None,
    **kwargs: Any,
):
    """The torch.compile backend: ``(GraphModule, example_inputs) -> callable``.

    ``options`` is what ``torch.compile(..., options={...})`` passes (a dict, see
    :class:`~optimizer.torch_backend.options.BackendOptions`); keyword options are merged
    into it, so ``functools.partial(graphopt_backend, time_limit=2.0)`` is a backend too.
    ``mode`` (``torch.compile``'s) is accepted and ignored. Bad options raise
    :class:`BackendOptionsError`; a graph that cannot be compiled runs eagerly instead.
    """
    del mode  # inductor's modes (reduce-overhead, max-autotune) have no meaning here
    opts = parse_options(options, **kwargs)
    if _needs_autograd(example_inputs, opts):
        from optimizer.torch_backend.training import compile_training

        return compile_training(gm, example_inputs, opts)
    number = next(_counter)
    name = f"graph #{number}"
    return CompiledGraph(gm, opts, frozen=static_inputs(gm, example_inputs), name=name)


def _needs_autograd(example_inputs: Sequence[Any], options: BackendOptions) -> bool:
    """Whether the graph must record gradients: grad mode on and some input requires grad
    (dynamo guards on both, so a change recompiles)."""
    if options.training == "never" or not torch.is_grad_enabled():
        return False
    return any(isinstance(x, torch.Tensor) and x.requires_grad for x in example_inputs)


def static_inputs(gm: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> set[int]:
    """Indices of the arguments that are module parameters or buffers (frozen in inference).

    Dynamo passes them as graph inputs (it inlines ``nn.Module``s) and marks them: a
    ``Parameter``, a tensor with ``_dynamo_static_input_type``, or a placeholder whose
    source is a module's ``_parameters``/``_buffers`` entry.
    """
    found = set()
    for i, (node, value) in enumerate(zip(placeholders(gm), example_inputs)):
        if not isinstance(value, torch.Tensor):
            continue
        source = getattr(node.meta.get("grapharg"), "source", None)
        name = source.name if source is not None else ""
        name = name() if callable(name) else name
        if (
            isinstance(value, torch.nn.Parameter)
            or getattr(value, "_dynamo_static_input_type", None) is not None
            or "._parameters[" in name
            or "._buffers[" in name
        ):
            found.add(i)
    return found


def register(name: str = BACKEND_NAME) -> None:
    """Make ``torch.compile(backend=name)`` find graphopt when the package is not installed
    (an installed package registers it through its entry point). Calling it again is fine."""
    import torch._dynamo

    if name not in torch._dynamo.list_backends(exclude_tags=()):
        torch._dynamo.register_backend(graphopt_backend, name=name)
