"""The Ray backend on a local Ray instance: the same predictions and Monte Carlo statistics as
the local engine, through Ray Data batches on an actor pool (one onnxruntime session each)."""

from __future__ import annotations

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the Ray backend needs the ray extra (pip install ray)")
pytest.importorskip("ray.data", reason="the Ray backend needs Ray Data (pip install 'ray[data]')")

from optimizer.label import LabelBackendError, LabelModel  # noqa: E402
from optimizer.label.ray_backend import RayEngine  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


def test_ray_predictions_equal_local_ones(local_ray, mlp_onnx, digits):
    x = digits[0][1400:1700]
    local = LabelModel(mlp_onnx).predict(x, batch_size=64, chunk_size=100)
    on_ray = LabelModel(mlp_onnx).use_ray("local", num_actors=2)
    remote = on_ray.predict(x, batch_size=64, chunk_size=100)
    assert isinstance(on_ray.engine, RayEngine)
    np.testing.assert_array_equal(remote.ids, local.ids)
    np.testing.assert_allclose(remote.probabilities, local.probabilities, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(remote.embeddings, local.embeddings, rtol=1e-6, atol=1e-7)

    # Monte Carlo dropout on Ray: all samples of a batch in one run on an actor.
    mc = on_ray.mc_dropout(x, samples=16, seed=0, batch_size=50, chunk_size=100, keep_samples=True)
    assert mc.samples.shape == (16, 300, 10)
    assert np.abs(mc.samples[0] - mc.samples[1]).max() > 1e-3
    det = local.probabilities.argmax(axis=1)
    assert (mc.mean.argmax(axis=1) == det).mean() > 0.9


def test_ray_engine_rejects_bad_settings():
    with pytest.raises(LabelBackendError, match="num_actors"):
        RayEngine("local", num_actors=0)
