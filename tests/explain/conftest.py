"""Shared fixtures of the explanation tests: small torch models and their ONNX exports.

The CNN and the vision transformer come from ``benchmarks/explain/models.py`` (seeded random
weights; the CNN with random BatchNorm statistics), exported once per session with
``torch.onnx.export(..., dynamo=True)`` and a dynamic batch dimension into a temporary folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is not installed with the package
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def torch_models():
    """{"cnn": module, "vit": module} in eval mode."""
    pytest.importorskip("torch", reason="needs the torch extra")
    from benchmarks.explain import models

    return {"cnn": models.small_cnn(), "vit": models.small_vit()}


@pytest.fixture(scope="session")
def onnx_models(torch_models, tmp_path_factory):
    """{"cnn": path, "vit": path}: the exports of :func:`torch_models`."""
    pytest.importorskip("onnxscript", reason="needs the torch extra (onnxscript)")
    import torch

    from benchmarks.explain import models

    folder = tmp_path_factory.mktemp("explain-models")
    example = torch.zeros(2, 1, models.IMAGE, models.IMAGE)
    return {
        name: models.export(module, folder / f"{name}.onnx", example)
        for name, module in torch_models.items()
    }


@pytest.fixture(scope="session")
def raw_onnx(torch_models, tmp_path_factory):
    """raw_onnx(name) -> path: the export without the exporter's clean-up (BatchNormalization,
    Identity and Constant nodes left in: graphopt has work to do), made on first use."""
    pytest.importorskip("onnxscript", reason="needs the torch extra (onnxscript)")
    import torch

    from benchmarks.explain import models

    folder = tmp_path_factory.mktemp("explain-raw-models")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            example = torch.zeros(2, 1, models.IMAGE, models.IMAGE)
            done[name] = models.export(
                torch_models[name], folder / f"{name}.onnx", example, optimize=False
            )
        return done[name]

    return get


@pytest.fixture(scope="session")
def images():
    """Six standardized digits, ``float32[6, 1, 32, 32]``, and their labels."""
    pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn")
    from benchmarks.explain import models

    x, y = models.digits()
    return x[:6].copy(), y[:6].copy()


@pytest.fixture(scope="session")
def gradient_models(onnx_models):
    """{"cnn": GradientModel, "vit": GradientModel} (sessions built once per session)."""
    from optimizer.explain import GradientModel

    return {name: GradientModel(path) for name, path in onnx_models.items()}


@pytest.fixture
def rng():
    return np.random.default_rng(0)
