"""Fixtures of the labelling tests: scikit-learn's digits and a small MLP trained on them
here (seeded) and exported with torch.onnx.export(dynamo=True), once per test session."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

# benchmarks/ lives at the top of the checkout and is not installed with the package.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.label import digits as digits_lib  # noqa: E402

#: Rows the MLP is trained on; the rest is held out (never seen by the model).
TRAIN_ROWS = 1400


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray]:
    """Digits inputs (1797 x 64, float32 in [0, 1]) and labels."""
    pytest.importorskip("sklearn", reason="the digits ship with scikit-learn")
    return digits_lib.load_digits_data()


@pytest.fixture(scope="session")
def trained_mlp(digits):
    """The torch MLP trained on the first TRAIN_ROWS digits (needs the torch extra)."""
    pytest.importorskip("torch", reason="training the test model needs the torch extra")
    x, y = digits
    return digits_lib.train_mlp(x[:TRAIN_ROWS], y[:TRAIN_ROWS], seed=0, epochs=40)


@pytest.fixture(scope="session")
def mlp_onnx(trained_mlp, tmp_path_factory) -> Path:
    """The trained MLP exported with torch.onnx.export(dynamo=True), Dropouts kept."""
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript")
    path = tmp_path_factory.mktemp("label-model") / "digits_mlp.onnx"
    return digits_lib.export_mlp(trained_mlp, path)
