"""The benchmark model zoo (benchmarks/models): registry, builders, ONNX export and cache.

Fast (default):

- registry sanity: suites resolve, specs are complete, example inputs have the declared dtypes;
- parameter counts of every model (built in torch only, no export) against the published figure
  (within 10%) or, where nothing is published, the figure derived from the configuration
  (exact);
- every ``quick`` model exports (into a temporary cache), passes ``onnx.checker``, runs on
  onnxruntime and matches torch eager (rtol 1e-3, atol 1e-4), and so does
  ``optimizer.optimize`` of it;
- the cache: hits do not re-export, keys separate batch sizes, an interrupted export leaves
  nothing behind.

Slow (``-m slow``): every ``taso`` and ``modern`` model exports and matches torch eager on
onnxruntime; ``optimizer.optimize_file`` of it succeeds and still matches. With
``GRAPHOPT_ZOO_REPORT=FILE`` set, each slow test appends a JSON line with its figures (export
time, ONNX size, node count, optimize time, errors) to FILE.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra")
pytest.importorskip("onnxscript", reason="needs the torch extra (onnxscript)")
ort = pytest.importorskip("onnxruntime")

# benchmarks/ lives at the top of the checkout and is not installed with the package.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import optimizer  # noqa: E402
from benchmarks import models  # noqa: E402

pytestmark = pytest.mark.torch

QUICK = models.SUITES["quick"]
FULL = models.SUITES["taso"] + models.SUITES["modern"]
RTOL, ATOL = 1e-3, 1e-4

TASO_MODELS = {"resnet50", "resnext50_32x4d", "nasnet_a_mobile", "nasrnn", "inception_v3",
               "squeezenet1_1", "vgg19", "bert_base"}  # fmt: skip
MODERN_MODELS = {"vit_b16", "gpt2_small", "llama_small", "mobilenet_v2", "convnext_tiny",
                 "t5_small_encoder"}  # fmt: skip
TEXT_MODELS = {"bert_base", "gpt2_small", "llama_small", "t5_small_encoder", "bert_tiny",
               "gpt2_tiny", "llama_tiny"}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _feed(name: str, inputs: tuple) -> dict[str, np.ndarray]:
    return {n: t.numpy() for n, t in zip(models.get(name).input_names, inputs)}


def _eager(name: str, module, inputs: tuple) -> np.ndarray:
    with torch.no_grad():
        return module(*inputs).numpy()


def _run_onnx(model: str | os.PathLike | onnx.ModelProto, feed: dict) -> np.ndarray:
    """The first output on onnxruntime without its graph rewrites (the graph as written)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
    return session.run(None, feed)[0]


def _assert_matches(actual: np.ndarray, expected: np.ndarray, what: str, scaled: bool = False):
    """``|actual - expected| <= atol + rtol |expected|``; ``scaled`` multiplies atol by the
    output's largest magnitude (deep random-weight models produce outputs far from 1)."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert np.isfinite(expected).all(), f"{what}: torch's output is not finite"
    atol = ATOL * max(1.0, float(np.abs(expected).max())) if scaled else ATOL
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=atol, err_msg=what)


def _max_err(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual.astype(np.float64) - expected).max())


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------


def test_suites_hold_the_issue_models():
    assert set(models.SUITES) == {"taso", "modern", "quick"}
    assert set(models.SUITES["taso"]) == TASO_MODELS
    assert set(models.SUITES["modern"]) == MODERN_MODELS
    assert 4 <= len(QUICK) <= 8
    for suite, names in models.SUITES.items():
        assert models.models_in(suite) == names
        for name in names:
            spec = models.get(name)
            assert spec.name == name and suite in spec.suites
    assert set(models.MODELS) == set(FULL) | set(QUICK)
    with pytest.raises(KeyError, match="known"):
        models.get("resnet51")
    with pytest.raises(KeyError, match="taso"):
        models.models_in("nope")


@pytest.mark.parametrize("name", list(models.MODELS))
def test_spec_is_complete(name):
    spec = models.get(name)
    assert spec.description and spec.reference and spec.expected_params > 0
    assert spec.inputs and spec.output_names
    assert spec.module_name.startswith("benchmarks.models.")
    doc = sys.modules.get(spec.module_name) or __import__(spec.module_name, fromlist=["_"])
    assert "Parameters" in (doc.__doc__ or ""), f"{spec.module_name}: no parameter counts"
    for batch in (1, 3):
        tensors = spec.example_inputs(batch)
        assert len(tensors) == len(spec.inputs)
        for t, ts in zip(tensors, spec.inputs):
            assert tuple(t.shape) == ts.concrete_shape(batch)
            if name in TEXT_MODELS:
                assert t.dtype == torch.int64
                if ts.fill is None:
                    assert int(t.min()) >= 0 and int(t.max()) < ts.high
            else:
                assert t.dtype == torch.float32
    again = spec.example_inputs(1)
    assert all(torch.equal(a, b) for a, b in zip(again, spec.example_inputs(1)))


@pytest.mark.parametrize("name", FULL + QUICK)
def test_parameter_count(name):
    spec = models.get(name)
    module = spec.builder()
    assert not module.training, f"{name}: not in eval mode"
    count = models.count_parameters(module)
    if spec.params_source.startswith("derived"):
        assert count == spec.expected_params, f"{name}: {count:,} parameters"
    else:
        ratio = count / spec.expected_params
        assert 0.9 <= ratio <= 1.1, (
            f"{name}: {count:,} parameters, published {spec.expected_params:,}"
        )


def test_builders_are_deterministic():
    a, _ = models.build("bert_tiny")
    b, _ = models.build("bert_tiny")
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb), na


# ---------------------------------------------------------------------------------------------
# quick models end to end
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", QUICK)
def test_quick_model_exports_runs_and_optimizes(name, tmp_path):
    path = models.export(name, cache_dir=tmp_path)
    assert path.parent == tmp_path and path.suffix == ".onnx"
    meta = models.read_sidecar(path)
    assert meta["exporter"] == "dynamo", meta["dynamo_error"]
    assert meta["name"] == name and meta["batch"] == 1
    assert meta["nodes"] > 0 and meta["export_seconds"] > 0
    onnx.checker.check_model(str(path), full_check=True)

    module, inputs = models.build(name)
    assert meta["parameters"] == models.count_parameters(module)
    expected = _eager(name, module, inputs)
    feed = _feed(name, inputs)
    _assert_matches(_run_onnx(path, feed), expected, f"{name}: onnxruntime vs eager")

    optimized = optimizer.optimize(onnx.load(path))
    onnx.checker.check_model(optimized)
    _assert_matches(_run_onnx(optimized, feed), expected, f"{name}: optimized vs eager")


def test_batch_sizes_export_separately(tmp_path):
    one = models.export("nasrnn_tiny", cache_dir=tmp_path)
    two = models.export("nasrnn_tiny", batch=2, cache_dir=tmp_path)
    assert one != two and "-b1-" in one.name and "-b2-" in two.name
    module, inputs = models.build("nasrnn_tiny", batch=2)
    assert inputs[0].shape == (3, 2, 64)
    _assert_matches(
        _run_onnx(two, _feed("nasrnn_tiny", inputs)), _eager("nasrnn_tiny", module, inputs), "b2"
    )


def test_cache_hit_does_not_export_again(tmp_path, monkeypatch):
    path = models.export("resnet_tiny", cache_dir=tmp_path)
    stamp = path.stat().st_mtime_ns
    calls = []

    def exporter(kind):
        def fake(*args, **kwargs):
            calls.append(kind)
            raise RuntimeError(f"{kind} called")

        return fake

    monkeypatch.setattr(models, "_export_dynamo", exporter("dynamo"))
    monkeypatch.setattr(models, "_export_torchscript", exporter("torchscript"))
    assert models.export("resnet_tiny", cache_dir=tmp_path) == path
    assert path.stat().st_mtime_ns == stamp and calls == []
    # a missing sidecar makes the entry incomplete: export again (here: the patched exporters)
    path.with_suffix(".json").unlink()
    with pytest.raises(RuntimeError, match="torchscript called"):
        models.export("resnet_tiny", cache_dir=tmp_path)
    assert calls == ["dynamo", "torchscript"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_interrupted_export_leaves_no_entry(tmp_path, monkeypatch):
    def interrupted(module, inputs, path, spec):
        Path(path).write_bytes(b"half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_export_dynamo", interrupted)
    with pytest.raises(KeyboardInterrupt):
        models.export("resnet_tiny", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_dynamo_failure_falls_back_and_is_recorded(tmp_path, monkeypatch):
    def broken(module, inputs, path, spec):
        raise RuntimeError("dynamo cannot export this")

    monkeypatch.setattr(models, "_export_dynamo", broken)
    path = models.export("nasrnn_tiny", cache_dir=tmp_path)
    meta = models.read_sidecar(path)
    assert meta["exporter"] == "torchscript"
    assert "dynamo cannot export this" in meta["dynamo_error"]
    onnx.checker.check_model(str(path))


def test_cache_location_and_key(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHOPT_CACHE_DIR", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c" / "models"
    monkeypatch.delenv("GRAPHOPT_CACHE_DIR")
    assert models.cache_dir() == Path.home() / ".cache" / "graphopt" / "models"
    key = models.cache_key("gpt2_tiny", batch=4)
    assert key.startswith("gpt2_tiny-b4-torch")
    assert torch.__version__.split("+")[0] in key
    assert models.cache_key("gpt2_tiny", batch=4) == key
    assert models.cache_key("gpt2_tiny", batch=1) != key


# ---------------------------------------------------------------------------------------------
# full models (slow)
# ---------------------------------------------------------------------------------------------


def _record(name: str, **fields) -> None:
    target = os.environ.get("GRAPHOPT_ZOO_REPORT")
    if target:
        with open(target, "a") as f:
            f.write(json.dumps({"model": name, **fields}) + "\n")


@pytest.fixture(scope="module")
def full_exports(tmp_path_factory):
    """Export each full model once per session: {name: (path, feed, eager output)}."""
    folder = tmp_path_factory.mktemp("zoo")
    done: dict = {}

    def get(name: str):
        if name not in done:
            start = time.perf_counter()
            path = models.export(name, cache_dir=folder)
            wall = time.perf_counter() - start
            module, inputs = models.build(name)
            expected = _eager(name, module, inputs)
            del module
            done[name] = (path, _feed(name, inputs), expected, wall)
        return done[name]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_full_model_exports_and_matches(name, full_exports):
    path, feed, expected, wall = full_exports(name)
    meta = models.read_sidecar(path)
    onnx.checker.check_model(str(path))
    actual = _run_onnx(path, feed)
    _record(
        name,
        stage="export",
        exporter=meta["exporter"],
        dynamo_error=meta["dynamo_error"],
        parameters=meta["parameters"],
        export_seconds=meta["export_seconds"],
        export_wall_seconds=round(wall, 2),
        onnx_bytes=meta["file_bytes"],
        nodes=meta["nodes"],
        max_abs_err=_max_err(actual, expected),
        max_abs_ref=float(np.abs(expected).max()),
    )
    _assert_matches(actual, expected, f"{name}: onnxruntime vs eager", scaled=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", FULL)
def test_full_model_optimizes_and_matches(name, full_exports, tmp_path):
    path, feed, expected, _ = full_exports(name)
    out = tmp_path / f"{name}.opt.onnx"
    start = time.perf_counter()
    try:
        report = optimizer.optimize_file(path, out)
    except Exception as exc:
        _record(name, stage="optimize", ok=False, error=f"{type(exc).__name__}: {exc}"[:2000],
                seconds=round(time.perf_counter() - start, 2))  # fmt: skip
        raise
    seconds = time.perf_counter() - start
    actual = _run_onnx(out, feed)
    _record(
        name,
        stage="optimize",
        ok=True,
        seconds=round(seconds, 2),
        nodes_before=report.before.nodes,
        nodes_after=report.after.nodes,
        bytes_after=out.stat().st_size,
        check_max_abs_error=report.max_abs_error,
        max_abs_err=_max_err(actual, expected),
    )
    _assert_matches(actual, expected, f"{name}: optimized vs eager", scaled=True)
