"""``torch.compile(backend="graphopt")``: through the ``torch_dynamo_backends`` entry point
once the package is installed with it, or through :func:`register` from a checkout."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra")
pytest.importorskip("onnxscript", reason="needs the torch extra (onnxscript)")
from backend_helpers import assert_same  # noqa: E402

from optimizer.torch_backend import BACKEND_NAME, graphopt_backend, register  # noqa: E402

pytestmark = pytest.mark.torch


def _entry_point():
    found = [ep for ep in entry_points(group="torch_dynamo_backends") if ep.name == BACKEND_NAME]
    return found[0] if found else None


@pytest.mark.skipif(
    _entry_point() is None,
    reason="the torch_dynamo_backends entry point 'graphopt' is not installed (declare it in "
    "pyproject.toml's [project.entry-points.torch_dynamo_backends], then pip install -e .)",
)
def test_installed_entry_point_lists_the_backend():
    assert _entry_point().value == "optimizer.torch_backend:graphopt_backend"
    assert _entry_point().load() is graphopt_backend
    assert BACKEND_NAME in torch._dynamo.list_backends()


def test_backend_by_name():
    register()
    register()  # a second call is harmless
    assert BACKEND_NAME in torch._dynamo.list_backends(exclude_tags=())
    module = torch.nn.Sequential(torch.nn.Linear(5, 5), torch.nn.ReLU()).eval()
    compiled = torch.compile(module, backend="graphopt", options={"time_limit": 0.5})
    x = torch.randn(2, 5)
    with torch.no_grad():
        assert_same(compiled(x), module(x))


def test_the_entry_point_string_works_through_dynamos_discovery(tmp_path, monkeypatch):
    """The exact entry point pyproject.toml declares, installed in a throwaway folder: dynamo's
    own discovery finds it, lists it and loads this backend (whether or not the package is
    installed here)."""
    from torch._dynamo.backends import registry

    dist = tmp_path / "graphopt_entry_point_probe-0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: graphopt-entry-point-probe\n")
    (dist / "entry_points.txt").write_text(
        "[torch_dynamo_backends]\ngraphopt = optimizer.torch_backend:graphopt_backend\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.list_backends()  # import the built-in backends first
    backends = {k: v for k, v in registry._BACKENDS.items() if k != BACKEND_NAME}
    compilers = {k: v for k, v in registry._COMPILER_FNS.items() if k != BACKEND_NAME}
    monkeypatch.setattr(registry, "_BACKENDS", backends)
    monkeypatch.setattr(registry, "_COMPILER_FNS", compilers)
    registry._discover_entrypoint_backends.cache_clear()
    try:
        registry._discover_entrypoint_backends()  # what list_backends() runs on first use
        assert BACKEND_NAME in torch._dynamo.list_backends()
        assert torch._dynamo.lookup_backend(BACKEND_NAME) is graphopt_backend
    finally:
        registry._discover_entrypoint_backends.cache_clear()
