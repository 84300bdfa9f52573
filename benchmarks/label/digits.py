"""The labelling benchmarks' (and tests') classifier: a small MLP with Dropout trained on
scikit-learn's bundled digits (8x8 images, 10 classes; no download), exported to ONNX.

- :func:`load_digits_data`: inputs scaled to [0, 1] as float32, labels as int64;
- :func:`train_mlp`: a seeded torch MLP 64-64-32-10 with Dropout after each hidden layer;
- :func:`export_mlp`: ``torch.onnx.export(..., dynamo=True)`` with a dynamic batch. The module
  is exported in train mode so that its Dropout nodes survive (torch drops them from eval-mode
  exports), then each Dropout's ``training_mode`` input is set to false: an inference model
  that still carries its Dropouts, as Monte Carlo dropout needs. (An MLP without BatchNorm
  computes the same in both modes apart from dropout.)
- :func:`mlp_to_onnx`: the same graph written directly with ``onnx.helper`` (Gemm, Relu,
  Dropout): milliseconds instead of the exporter's second, for benchmark loops that retrain
  hundreds of times.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HIDDEN = (64, 32)
DROPOUT = 0.25


def load_digits_data() -> tuple[np.ndarray, np.ndarray]:
    """Digits inputs (N x 64, float32 in [0, 1]) and labels (N, int64)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)


def make_mlp(num_inputs: int = 64, num_classes: int = 10, *, dropout: float = DROPOUT):
    """The untrained MLP (torch)."""
    from torch import nn

    layers: list = []
    width = num_inputs
    for h in HIDDEN:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def train_mlp(
    x: np.ndarray,
    y: np.ndarray,
    *,
    num_classes: int = 10,
    seed: int = 0,
    epochs: int = 60,
    batch: int = 64,
    lr: float = 3e-3,
    dropout: float = DROPOUT,
    weight_decay: float = 1e-4,
):
    """Train the MLP with Adam on cross-entropy (seeded; a few seconds on the full digits).

    Small training sets get more passes (at least ~400 optimizer steps in all), so that a model
    trained on 20 labels is trained as fully as one trained on 1000.
    """
    import torch

    threads = torch.get_num_threads()
    # A model this small trains several times faster on one thread than on a busy pair.
    torch.set_num_threads(1)
    try:
        return _train(x, y, num_classes, seed, epochs, batch, lr, dropout, weight_decay)
    finally:
        torch.set_num_threads(threads)


def _train(x, y, num_classes, seed, epochs, batch, lr, dropout, weight_decay):
    import torch

    torch.manual_seed(seed)
    model = make_mlp(x.shape[1], num_classes, dropout=dropout)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    xt, yt = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    steps_per_epoch = max(1, -(-len(x) // batch))
    epochs = max(epochs, -(-400 // steps_per_epoch))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch):
            idx = perm[start : start + batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return model.eval()


def _inference_dropouts(model: onnx.ModelProto) -> onnx.ModelProto:
    """Point every Dropout's training_mode input at a constant false."""
    name = "graphopt_bench_training_mode_false"
    model.graph.initializer.append(numpy_helper.from_array(np.array(False), name))
    for node in model.graph.node:
        if node.op_type == "Dropout":
            while len(node.input) < 3:
                node.input.append("")
            node.input[2] = name
    return model


def export_mlp(model, path: str | os.PathLike) -> Path:
    """Export the trained MLP with torch.onnx.export(dynamo=True), batch dimension dynamic,
    Dropout nodes kept in inference mode (see the module docstring)."""
    import torch

    path = Path(path)
    example = torch.zeros(2, model[0].in_features)
    model.train()  # eval-mode exports drop Dropout altogether
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Exporting a model while it is in training")
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=["x"],
                output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                verbose=False,
            )
    finally:
        model.eval()
    proto = _inference_dropouts(program.model_proto)
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return path


def mlp_to_onnx(model, *, opset: int = 17) -> onnx.ModelProto:
    """The trained MLP as an ONNX graph written by hand (same structure as :func:`export_mlp`:
    Gemm, Relu, Dropout in inference mode, ..., Gemm -> logits)."""
    from torch import nn

    inits, nodes = [], []
    current = "x"
    linear = [m for m in model if isinstance(m, nn.Linear)]
    dropout = next((m.p for m in model if isinstance(m, nn.Dropout)), 0.0)
    inits.append(numpy_helper.from_array(np.array(dropout, np.float32), "ratio"))
    inits.append(numpy_helper.from_array(np.array(False), "training_mode"))
    for k, layer in enumerate(linear):
        w = layer.weight.detach().numpy().astype(np.float32)
        b = layer.bias.detach().numpy().astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{k}"), numpy_helper.from_array(b, f"b{k}")]
        out = "logits" if k == len(linear) - 1 else f"linear{k}"
        nodes.append(helper.make_node("Gemm", [current, f"w{k}", f"b{k}"], [out], transB=1))
        current = out
        if k < len(linear) - 1:
            nodes.append(helper.make_node("Relu", [current], [f"relu{k}"]))
            nodes.append(
                helper.make_node("Dropout", [f"relu{k}", "ratio", "training_mode"], [f"drop{k}"])
            )
            current = f"drop{k}"
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", linear[0].in_features])],
        [
            helper.make_tensor_value_info(
                "logits", TensorProto.FLOAT, ["batch", linear[-1].out_features]
            )
        ],
        initializer=inits,
    )
    model_proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model_proto.ir_version = 8
    onnx.checker.check_model(model_proto)
    return model_proto


def torch_probabilities(model, x: np.ndarray) -> np.ndarray:
    """Softmax of the torch model's logits in eval mode (a reference for the ONNX path)."""
    import torch

    with torch.no_grad():
        logits = model.eval()(torch.from_numpy(np.asarray(x, np.float32)))
    return torch.softmax(logits, dim=1).numpy().astype(np.float64)
