"""Backend options: parsed and validated up front, and delivered through
``torch.compile(..., options={...})`` to the optimizer and the onnxruntime session."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra")
pytest.importorskip("onnxscript", reason="needs the torch extra (onnxscript)")
from backend_helpers import Recorder, assert_same  # noqa: E402

import optimizer  # noqa: E402
from optimizer.torch_backend import BackendOptionsError, graphopt_backend  # noqa: E402
from optimizer.torch_backend.options import (  # noqa: E402
    DEBUG_ENV,
    OPTION_NAMES,
    BackendOptions,
    parse_options,
)

pytestmark = pytest.mark.torch


def test_defaults_and_merging():
    assert parse_options() == BackendOptions()
    merged = parse_options({"time_limit": 2.0}, search="greedy")
    assert (merged.time_limit, merged.search) == (2.0, "greedy")
    assert parse_options(merged) is merged


@pytest.mark.parametrize(
    ("given", "match"),
    [
        ({"time_limt": 1.0}, "unknown graphopt backend option 'time_limt'"),
        ({"search": "annealing"}, "option search must be one of"),
        ({"cost_model": "vibes"}, "option cost_model must be one of"),
        ({"time_limit": 0}, "time_limit must be > 0"),
        ({"rtol": -1.0}, "rtol must be >= 0"),
        ({"threads": 0}, "threads must be a positive int"),
        ({"device": "tpu"}, "option device must be one of"),
        ({"providers": "CPUExecutionProvider"}, "providers must be a list"),
        ({"providers": [42]}, "bad provider 42"),
    ],
)
def test_bad_options_are_refused_with_one_clear_line(given, match):
    with pytest.raises(BackendOptionsError, match=match) as info:
        parse_options(given)
    assert "\n" not in str(info.value)
    if "unknown" in match:
        assert all(name in str(info.value) for name in OPTION_NAMES)


def test_check_defaults_to_debug_mode(monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    assert not BackendOptions().check_on_first_call
    assert BackendOptions(debug=True).check_on_first_call
    assert not BackendOptions(debug=True, check=False).check_on_first_call
    monkeypatch.setenv(DEBUG_ENV, "1")
    assert BackendOptions().check_on_first_call


def test_bad_options_through_torch_compile_fail_at_compile_time():
    compiled = torch.compile(
        torch.nn.Linear(3, 3), backend=graphopt_backend, options={"search": "annealing"}
    )
    with pytest.raises(Exception, match="option search must be one of"):
        compiled(torch.randn(2, 3))


def test_options_reach_the_optimizer_and_the_session(monkeypatch):
    seen = []
    real = optimizer.optimize_file

    def spy(src, dst, options=None, **kwargs):
        seen.append(options)
        return real(src, dst, options, **kwargs)

    monkeypatch.setattr(optimizer, "optimize_file", spy)
    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.GELU()).eval()
    backend = Recorder()
    compiled = torch.compile(
        module,
        backend=backend,
        options={"search": "greedy", "time_limit": 0.5, "cost_model": "analytic", "threads": 1},
    )
    x = torch.randn(2, 4)
    with torch.no_grad():
        assert_same(compiled(x), module(x))
    (opts,) = seen
    assert (opts.search, opts.time_limit, opts.cost_model) == ("greedy", 0.5, "analytic")
    assert opts.check is False  # the backend verifies on the call's own inputs instead
    (entry,) = backend.graphs[0]._entries
    session_options = entry.runner.session.get_session_options()
    assert session_options.intra_op_num_threads == 1
    assert session_options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert entry.runner.session.get_providers() == ["CPUExecutionProvider"]


def test_optimize_off_runs_the_export_as_is(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("optimize=False must not call the optimizer")

    monkeypatch.setattr(optimizer, "optimize_file", forbidden)
    module = torch.nn.Linear(4, 2).eval()
    backend = Recorder(optimize=False)
    compiled = torch.compile(module, backend=backend)
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert_same(compiled(x), module(x))
    assert backend.graphs[0].fallback_reason is None


def test_torch_compile_modes_are_accepted():
    module = torch.nn.Linear(4, 2).eval()
    backend = Recorder()
    compiled = torch.compile(module, backend=backend, mode="max-autotune")  # no meaning here
    x = torch.randn(3, 4)
    with torch.no_grad():
        assert_same(compiled(x), module(x))
    assert backend.graphs[0].fallback_reason is None


def test_explicit_providers_and_spinning():
    module = torch.nn.Linear(4, 2).eval()
    backend = Recorder(providers=["CPUExecutionProvider"], spinning=True)
    compiled = torch.compile(module, backend=backend)
    with torch.no_grad():
        compiled(torch.randn(3, 4))
    (entry,) = backend.graphs[0]._entries
    assert entry.runner.session.get_providers() == ["CPUExecutionProvider"]
    spinning = entry.runner.session.get_session_options().get_session_config_entry(
        "session.intra_op.allow_spinning"
    )
    assert spinning == "1"


def test_training_never_compiles_for_inference():
    module = torch.nn.Linear(4, 2)
    backend = Recorder(training="never")
    compiled = torch.compile(module, backend=backend)
    x = torch.randn(3, 4)
    out = compiled(x)  # grad mode on, weights require grad: still the inference path
    assert not out.requires_grad
    assert backend.graphs[0].frozen
