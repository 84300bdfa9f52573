"""A graph graphopt cannot export, optimize, verify or run falls back to eager with one
warning naming the reason, never a crash and never a wrong result; with ``fallback=False``
the error is raised instead."""

from __future__ import annotations

import warnings

import onnx
import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra")
pytest.importorskip("onnxscript", reason="needs the torch extra (onnxscript)")
import onnxruntime as ort  # noqa: E402
from backend_helpers import Recorder, assert_same  # noqa: E402

import optimizer  # noqa: E402
from optimizer.errors import GraphoptError  # noqa: E402
from optimizer.torch_backend import ExportError, GraphoptFallbackWarning  # noqa: E402

pytestmark = pytest.mark.torch


@torch.library.custom_op("graphopt_test::mystery", mutates_args=())
def mystery(x: torch.Tensor) -> torch.Tensor:
    """An operator torch.onnx has no translation for."""
    return torch.sin(x) * 2


@mystery.register_fake
def _(x):
    return torch.empty_like(x)


class _Mystery(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x):
        return mystery(self.lin(x)).relu()


class _Small(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.tanh(self.lin(x))


def _calls(compiled, module, x, times=3):
    """Call ``compiled`` ``times`` times (outputs must equal eager's); the warnings raised."""
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        for _ in range(times):
            assert_same(compiled(x), module(x))
    return [w for w in caught if issubclass(w.category, GraphoptFallbackWarning)]


def test_unexportable_graph_runs_eagerly_after_one_warning():
    module = _Mystery().eval()
    backend = Recorder(fallback=True)
    fallbacks = _calls(torch.compile(module, backend=backend), module, torch.randn(2, 4))
    assert len(fallbacks) == 1
    assert "mystery" in str(fallbacks[0].message)
    (graph,) = backend.graphs
    assert "mystery" in graph.fallback_reason


def test_fallback_off_raises_the_reason():
    module = _Mystery().eval()
    compiled = torch.compile(module, backend=Recorder(fallback=False))
    with pytest.raises(ExportError, match="mystery"), torch.no_grad():
        compiled(torch.randn(2, 4))


def test_optimizer_failure_falls_back(monkeypatch):
    def broken(*args, **kwargs):
        raise GraphoptError("the optimizer broke on purpose")

    monkeypatch.setattr(optimizer, "optimize_file", broken)
    module = _Small().eval()
    fallbacks = _calls(
        torch.compile(module, backend=Recorder(fallback=True)), module, torch.randn(3, 4)
    )
    assert len(fallbacks) == 1
    assert "the optimizer broke on purpose" in str(fallbacks[0].message)


def _wrong_optimizer(monkeypatch):
    """optimizer.optimize_file that writes a subtly wrong model (one weight nudged)."""
    real = optimizer.optimize_file

    def wrong(src, dst, options=None, **kwargs):
        report = real(src, dst, options, **kwargs)
        bad = onnx.load(dst)
        init = max(bad.graph.initializer, key=lambda t: len(t.raw_data))
        values = onnx.numpy_helper.to_array(init).copy()
        values.flat[0] += 0.5
        init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
        onnx.save(bad, dst)
        return report

    monkeypatch.setattr(optimizer, "optimize_file", wrong)


def test_verification_catches_a_wrong_optimization(monkeypatch):
    _wrong_optimizer(monkeypatch)
    module = _Small().eval()
    backend = Recorder(fallback=True, check=False)  # the verification alone must catch it
    fallbacks = _calls(torch.compile(module, backend=backend), module, torch.randn(3, 4))
    assert len(fallbacks) == 1
    assert "differs from the exported" in str(fallbacks[0].message)


def test_verification_of_random_graphs_catches_a_wrong_optimization(monkeypatch):
    """Graphs that draw random numbers are verified with their random ops seeded alike."""
    _wrong_optimizer(monkeypatch)
    module = torch.nn.Sequential(_Small(), torch.nn.Dropout(0.3)).train()
    backend = Recorder(fallback=True, check=False)
    compiled = torch.compile(module, backend=backend)
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        compiled(torch.randn(3, 4))
    fallbacks = [w for w in caught if issubclass(w.category, GraphoptFallbackWarning)]
    assert len(fallbacks) == 1
    assert "differs from the exported" in str(fallbacks[0].message)


def test_first_call_check_compares_with_eager(monkeypatch):
    _wrong_optimizer(monkeypatch)
    module = _Small().eval()
    backend = Recorder(fallback=True, verify=False, check=True)
    fallbacks = _calls(torch.compile(module, backend=backend), module, torch.randn(3, 4))
    assert len(fallbacks) == 1
    assert "differs from eager" in str(fallbacks[0].message)


def test_without_checks_a_wrong_model_is_not_caught(monkeypatch):
    """The control of the two tests above: they catch something that is really there."""
    _wrong_optimizer(monkeypatch)
    module = _Small().eval()
    compiled = torch.compile(module, backend=Recorder(verify=False, check=False))
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert not torch.allclose(compiled(x), module(x), atol=1e-4)


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(),
    reason="onnxruntime has CUDA here, so device='cuda' does not fail",
)
def test_missing_execution_provider_falls_back():
    module = _Small().eval()
    backend = Recorder(fallback=True, device="cuda")
    fallbacks = _calls(torch.compile(module, backend=backend), module, torch.randn(3, 4))
    assert len(fallbacks) == 1
    assert "CUDAExecutionProvider" in str(fallbacks[0].message)


def test_a_run_that_fails_later_falls_back(monkeypatch):
    from optimizer.torch_backend.session import OrtRunner, SessionError

    module = _Small().eval()
    backend = Recorder(fallback=True)
    compiled = torch.compile(module, backend=backend)
    x = torch.randn(3, 4)
    assert _calls(compiled, module, x, times=1) == []

    def broken(self, inputs):
        raise SessionError("onnxruntime failed to run the model: out of memory")

    monkeypatch.setattr(OrtRunner, "__call__", broken)
    fallbacks = _calls(compiled, module, x)
    assert len(fallbacks) == 1
    assert "out of memory" in str(fallbacks[0].message)
