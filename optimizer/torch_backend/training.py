"""Training: forward and backward graphs through aot_autograd, each run on onnxruntime.

aot_autograd traces the dynamo graph into a functional ATen forward graph (which also
returns what the backward needs) and a backward graph, and wraps them in an
``autograd.Function``; it also applies in-place updates of inputs and rebuilds outputs that
alias inputs around the compiled graphs. Each of the two graphs becomes a
:class:`~optimizer.torch_backend.compiled.CompiledGraph`: exported, optimized, verified and run
by onnxruntime, or run eagerly (after one warning) when it cannot be. Nothing is frozen:
parameters change at every optimizer step, so they stay inputs of both graphs.

Random operators (dropout in training mode) draw different numbers in onnxruntime than in
PyTorch; the forward graph returns the mask it drew, so the backward graph stays consistent
with it, but the outputs are not bit-comparable with eager's.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.fx

from optimizer.torch_backend.compiled import CompiledGraph
from optimizer.torch_backend.options import BackendOptions

_counter = itertools.count(1)


def compile_training(
    gm: torch.fx.GraphModule, example_inputs: Sequence[Any], options: BackendOptions
) -> Callable[..., Any]:
    """The aot_autograd-wrapped callable for dynamo graph ``gm``: its forward and backward
    graphs compiled by graphopt."""
    from torch._dynamo.backends.common import aot_autograd

    number = next(_counter)
    compiled: dict[str, CompiledGraph] = {}

    def compiler(kind: str):
        def compile_fn(aten_gm: torch.fx.GraphModule, _example_inputs: Sequence[Any]):
            graph = CompiledGraph(aten_gm, options, name=f"training graph #{number} ({kind})")
            compiled[kind] = graph

            def boxed(args: list[Any]) -> Any:
                # aot_autograd's boxed convention: we own the list and clear it, so the
                # activations it holds can be freed while the graph runs
                unboxed = list(args)
                args.clear()
                return graph(*unboxed)

            boxed._boxed_call = True  # type: ignore[attr-defined]
            return boxed

        return compile_fn

    backend = aot_autograd(
        fw_compiler=compiler("forward"),
        bw_compiler=compiler("backward"),
        inference_compiler=compiler("inference"),
    )
    result = backend(gm, list(example_inputs))
    with contextlib.suppress(AttributeError):  # a callable that takes no attributes
        result.graphopt_graphs = compiled  # lets tests and benchmarks see the compiled graphs
    return result
