"""Helpers of the torch.compile backend tests (a module, not conftest.py, so that test
files can import them: tests/conftest.py already owns the module name ``conftest``).

:class:`Recorder` is a backend that compiles
with graphopt and keeps the :class:`CompiledGraph` objects it made, so tests can look at what
ran on onnxruntime (compilations, fallbacks, exported models). The default settings keep the
search short, compare with eager on the first call, and raise instead of falling back, so a
test fails loudly when a graph it expects on onnxruntime would silently run eagerly.
"""

from __future__ import annotations

import torch
from torch.utils import _pytree as pytree

from optimizer.torch_backend import graphopt_backend
from optimizer.torch_backend.compiled import CompiledGraph

#: Short search, first-call comparison with eager on, failures raised (not hidden).
FAST = {"time_limit": 1.0, "check": True, "fallback": False}

#: Tolerance against eager PyTorch (onnxruntime's kernels sum in other orders).
RTOL, ATOL = 1e-3, 1e-4


class Recorder:
    """A graphopt backend that records the compiled graphs (training: forward, backward)."""

    def __init__(self, **options) -> None:
        self.options = {**FAST, **options}
        self.results: list = []

    def __call__(self, gm, example_inputs, **kwargs):
        options = {**self.options, **(kwargs.pop("options", None) or {})}
        result = graphopt_backend(gm, example_inputs, options=options, **kwargs)
        self.results.append(result)
        return result

    @property
    def graphs(self) -> list[CompiledGraph]:
        """Every CompiledGraph made so far (training graphs unpacked)."""
        found = []
        for r in self.results:
            if isinstance(r, CompiledGraph):
                found.append(r)
            found.extend(getattr(r, "graphopt_graphs", {}).values())
        return found


def assert_same(got, expected, rtol: float = RTOL, atol: float = ATOL) -> None:
    """Same structure; tensors equal (floats within tolerance, others exactly); other
    leaves equal."""
    got_leaves, got_spec = pytree.tree_flatten(got)
    exp_leaves, exp_spec = pytree.tree_flatten(expected)
    assert got_spec == exp_spec, f"output structure {got_spec} != eager's {exp_spec}"
    for g, e in zip(got_leaves, exp_leaves):
        if isinstance(e, torch.Tensor):
            assert isinstance(g, torch.Tensor)
            assert g.dtype == e.dtype and g.shape == e.shape and g.device == e.device
            if e.is_floating_point():
                torch.testing.assert_close(g, e, rtol=rtol, atol=atol)
            else:
                assert torch.equal(g, e)
        else:
            assert g == e
