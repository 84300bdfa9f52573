"""Shared builders of test models: torch modules, their ONNX exports, and random ONNX graphs.

Torch is imported lazily, so that the ONNX-only parts (the hypothesis strategy
:func:`small_models`) work without the ``torch`` extra.

- :func:`resnet_style_cnn`, :func:`transformer_encoder`: small torch modules in eval mode with
  fixed-seed random weights (and random BatchNorm statistics, so BN is not a no-op).
- :func:`resnet50`: torchvision's ResNet-50 written out (Bottleneck blocks [3, 4, 6, 3]).
- :func:`export_onnx`: ``torch.onnx.export(..., dynamo=True)`` with a dynamic batch dimension;
  falls back to the TorchScript exporter only when the dynamo exporter fails.
- :func:`exported`: an export cached per process in a temporary folder.
- :func:`small_models`: a hypothesis strategy of small valid ONNX models.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18

# ---------------------------------------------------------------------------------------------
# torch models
# ---------------------------------------------------------------------------------------------


def _torch():
    import torch

    return torch


def _randomize_batchnorm(module, seed: int) -> None:
    """Give every BatchNorm random affine parameters and running statistics."""
    torch = _torch()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)


def resnet_style_cnn(seed: int = 0, num_classes: int = 10):
    """A small ResNet: conv-bn-relu stem, three residual blocks (two downsample), pool, linear.

    Input ``float[N, 3, 32, 32]``, output ``float[N, num_classes]``; eval mode.
    """
    torch = _torch()
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU()
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            identity = x if self.down is None else self.down(x)
            y = self.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.relu(y + identity)

    class SmallResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
            )
            self.layer1 = Block(16, 16, 1)
            self.layer2 = Block(16, 32, 2)
            self.layer3 = Block(32, 64, 2)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.dropout = nn.Dropout(0.2)
            self.fc = nn.Linear(64, num_classes)

        def forward(self, x):
            x = self.layer3(self.layer2(self.layer1(self.stem(x))))
            x = torch.flatten(self.pool(x), 1)
            return self.fc(self.dropout(x))

    torch.manual_seed(seed)
    model = SmallResNet()
    _randomize_batchnorm(model, seed)
    return model.eval()


def transformer_encoder(seed: int = 0, vocab: int = 100, d_model: int = 64, seq_len: int = 16):
    """Token embedding + learned positions + 2-layer ``nn.TransformerEncoder`` (4 heads) + head.

    Input ``int64[N, seq_len]`` token ids, output ``float[N, seq_len, vocab]``; eval mode.
    """
    torch = _torch()
    nn = torch.nn

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab, d_model)
            self.pos = nn.Parameter(torch.randn(1, seq_len, d_model) * 0.02)
            layer = nn.TransformerEncoderLayer(
                d_model, nhead=4, dim_feedforward=128, dropout=0.1, batch_first=True
            )
            self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, vocab)

        def forward(self, tokens):
            x = self.embed(tokens) + self.pos
            return self.head(self.norm(self.encoder(x)))

    torch.manual_seed(seed)
    return Encoder().eval()


def resnet50(seed: int = 0, num_classes: int = 1000):
    """torchvision's ResNet-50 (v1.5: stride on the 3x3 conv), written out; ~25.6M parameters."""
    torch = _torch()
    nn = torch.nn

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + identity)

    class ResNet(nn.Module):
        def __init__(self, layers=(3, 4, 6, 3)) -> None:
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = self._layer(64, layers[0])
            self.layer2 = self._layer(128, layers[1], stride=2)
            self.layer3 = self._layer(256, layers[2], stride=2)
            self.layer4 = self._layer(512, layers[3], stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512 * 4, num_classes)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def _layer(self, planes: int, blocks: int, stride: int = 1):
            downsample = None
            if stride != 1 or self.inplanes != planes * 4:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                    nn.BatchNorm2d(planes * 4),
                )
            layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * 4
            layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    torch.manual_seed(seed)
    return ResNet().eval()


def example_inputs(name: str, batch: int = 2, seed: int = 0) -> tuple:
    """Example inputs (a tuple of tensors) for the builder called ``name``."""
    torch = _torch()
    gen = torch.Generator().manual_seed(seed)
    if name == "transformer":
        return (torch.randint(0, 100, (batch, 16), generator=gen),)
    if name == "resnet50":
        return (torch.randn(batch, 3, 224, 224, generator=gen),)
    return (torch.randn(batch, 3, 32, 32, generator=gen),)


BUILDERS = {
    "cnn": resnet_style_cnn,
    "transformer": transformer_encoder,
    "resnet50": resnet50,
}

#: Which exporter produced each file written by :func:`export_onnx` ("dynamo" or "torchscript").
EXPORTER_USED: dict[str, str] = {}


def export_onnx(
    module,
    example_inputs: tuple,
    path: str | os.PathLike,
    dynamic_batch: bool = True,
    *,
    optimize: bool = True,
) -> Path:
    """Export ``module`` to ``path`` with ``torch.onnx.export(..., dynamo=True)``.

    With ``dynamic_batch`` dimension 0 of every input is dynamic (``batch``). Weights are
    embedded in the file (no external data). ``optimize=False`` skips the exporter's own
    onnxscript clean-up, which leaves Identity nodes, Constant nodes and constant
    subexpressions in the model (work for graphopt). Falls back to ``dynamo=False`` only when
    the dynamo exporter raises; :data:`EXPORTER_USED` records which one wrote the file.
    """
    torch = _torch()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = (
        [f"input_{i}" for i in range(len(example_inputs))] if len(example_inputs) > 1 else ["input"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            kwargs: dict[str, Any] = {}
            if dynamic_batch:
                batch = torch.export.Dim("batch", min=1, max=1024)
                kwargs["dynamic_shapes"] = tuple({0: batch} for _ in example_inputs)
            program = torch.onnx.export(
                module,
                tuple(example_inputs),
                dynamo=True,
                input_names=names,
                output_names=["output"],
                external_data=False,
                verbose=False,
                optimize=optimize,
                **kwargs,
            )
            program.save(str(path), external_data=False)
            EXPORTER_USED[str(path)] = "dynamo"
        except Exception as exc:  # noqa: BLE001 - fall back to the TorchScript exporter
            warnings.warn(f"dynamo export failed ({exc!r}); using dynamo=False", stacklevel=2)
            axes = {n: {0: "batch"} for n in [*names, "output"]} if dynamic_batch else None
            torch.onnx.export(
                module,
                tuple(example_inputs),
                str(path),
                dynamo=False,
                input_names=names,
                output_names=["output"],
                dynamic_axes=axes,
                opset_version=OPSET,
            )
            EXPORTER_USED[str(path)] = "torchscript"
    return path


@functools.cache
def _cache_dir() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="graphopt-test-models-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def exported(name: str, optimize: bool = True) -> Path:
    """The ONNX export of builder ``name`` (cached per process; treat the file as read-only).

    ``optimize=False``: the raw export, without the exporter's own clean-up.
    """
    module = BUILDERS[name]()
    suffix = "" if optimize else "-raw"
    path = _cache_dir() / f"{name}{suffix}.onnx"
    return export_onnx(module, example_inputs(name), path, optimize=optimize)


def eager_outputs(name: str, inputs: tuple) -> np.ndarray:
    """Torch's eager output of builder ``name`` (fresh module, same seed as the export)."""
    torch = _torch()
    module = _eager_module(name)
    with torch.no_grad():
        return module(*inputs).numpy()


@functools.cache
def _eager_module(name: str):
    return BUILDERS[name]()


# ---------------------------------------------------------------------------------------------
# random small ONNX graphs (hypothesis)
# ---------------------------------------------------------------------------------------------

_UNARY = ("Relu", "Sigmoid", "Tanh", "Identity", "Dropout", "Neg", "Abs")
_BINARY = ("Add", "Mul", "Sub")


class _GraphBuilder:
    """Accumulates nodes, initializers and typed values while a random graph is drawn."""

    def __init__(self, draw, st) -> None:
        self.draw = draw
        self.st = st
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.values: list[tuple[str, tuple]] = []  # float values: (name, shape)
        self.counter = 0
        self.rng = np.random.default_rng(draw(st.integers(0, 2**16)))

    def fresh(self, prefix: str = "v") -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def node(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> list[str]:
        outs = [self.fresh() for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.fresh("n_"), **attrs))
        return outs

    def init(self, array: np.ndarray, prefix: str = "w") -> str:
        name = self.fresh(prefix)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def const_node(self, array: np.ndarray) -> str:
        out = self.fresh("c")
        tensor = numpy_helper.from_array(array, out + "_t")
        self.nodes.append(helper.make_node("Constant", [], [out], value=tensor))
        return out

    def weight(self, shape: tuple) -> str:
        """A constant float tensor, as an initializer or a Constant node."""
        array = self.rng.standard_normal(shape).astype(np.float32)
        if self.draw(self.st.booleans()):
            return self.init(array)
        return self.const_node(array)

    def pick(self) -> tuple[str, tuple]:
        return self.values[self.draw(self.st.integers(0, len(self.values) - 1))]


def _concrete(shape: tuple) -> tuple[int, ...] | None:
    return None if any(isinstance(d, str) for d in shape) else tuple(shape)


def _step(b: _GraphBuilder) -> None:
    """Append one random operation to ``b`` (its result becomes available to later steps)."""
    st, draw = b.st, b.draw
    kind = draw(
        st.sampled_from(
            ["unary", "binary", "binary_const", "matmul", "transpose", "reshape", "concat",
             "shape_gather", "duplicate", "dead", "const_chain"]
        )
    )  # fmt: skip
    name, shape = b.pick()
    if kind == "unary":
        op = draw(st.sampled_from(_UNARY))
        (out,) = b.node(op, [name])
        b.values.append((out, shape))
    elif kind == "binary":
        same = [v for v in b.values if v[1] == shape]
        other, _ = same[draw(st.integers(0, len(same) - 1))]
        (out,) = b.node(draw(st.sampled_from(_BINARY)), [name, other])
        b.values.append((out, shape))
    elif kind == "binary_const":
        # broadcast against a constant over the trailing dimension (or a scalar)
        cshape = () if draw(st.booleans()) or not shape else (shape[-1],)
        if any(isinstance(d, str) for d in cshape):
            cshape = ()
        w = b.weight(cshape)
        inputs = [name, w] if draw(st.booleans()) else [w, name]
        (out,) = b.node(draw(st.sampled_from(_BINARY)), inputs)
        b.values.append((out, shape))
    elif kind == "matmul":
        if not shape or isinstance(shape[-1], str):
            return
        n = draw(st.integers(1, 4))
        w = b.weight((shape[-1], n))
        (out,) = b.node("MatMul", [name, w])
        b.values.append((out, (*shape[:-1], n)))
    elif kind == "transpose":
        if len(shape) < 2:
            return
        perm = list(draw(st.permutations(range(len(shape)))))
        (out,) = b.node("Transpose", [name], perm=perm)
        b.values.append((out, tuple(shape[p] for p in perm)))
    elif kind == "reshape":
        static = _concrete(shape)
        if static is None:
            if len(shape) < 2 or any(isinstance(d, str) for d in shape[1:]):
                return
            # keep the symbolic leading dim (0 copies it), flatten the rest
            rest = int(np.prod(shape[1:]))
            target = np.array([0, rest], np.int64)
            new = (shape[0], rest)
        else:
            total = int(np.prod(static))
            target = np.array([total] if draw(st.booleans()) else [-1, 1], np.int64)
            new = (total,) if len(target) == 1 else (total, 1)
        t = b.init(target, "shape") if draw(st.booleans()) else b.const_node(target)
        (out,) = b.node("Reshape", [name, t])
        b.values.append((out, new))
    elif kind == "concat":
        if not shape:
            return
        same = [v for v in b.values if v[1] == shape]
        other, _ = same[draw(st.integers(0, len(same) - 1))]
        axis = len(shape) - 1
        if isinstance(shape[axis], str):
            return
        (out,) = b.node("Concat", [name, other], axis=axis)
        b.values.append((out, (*shape[:-1], 2 * shape[-1])))
    elif kind == "shape_gather":
        # Shape -> Gather(last dim) -> Cast -> Mul: a shape computation feeding float math
        if not shape:
            return
        (shp,) = b.node("Shape", [name])
        idx = b.init(np.array(len(shape) - 1, np.int64), "idx")
        (dim,) = b.node("Gather", [shp, idx], axis=0)
        (dimf,) = b.node("Cast", [dim], to=TensorProto.FLOAT)
        (out,) = b.node("Mul", [name, dimf])
        b.values.append((out, shape))
    elif kind == "duplicate":
        # the same node twice, then combined (CSE fodder)
        op = draw(st.sampled_from(("Relu", "Sigmoid", "Tanh")))
        (a,) = b.node(op, [name])
        (c,) = b.node(op, [name])
        (out,) = b.node("Add", [a, c])
        b.values.append((out, shape))
    elif kind == "dead":
        op = draw(st.sampled_from(_UNARY))
        b.node(op, [name])  # result never read
    elif kind == "const_chain":
        # computation on constants only (folding fodder), then applied to a value
        cshape = () if not shape or isinstance(shape[-1], str) else (shape[-1],)
        w1, w2 = b.weight(cshape), b.weight(cshape)
        (s,) = b.node(draw(st.sampled_from(_BINARY)), [w1, w2])
        (s2,) = b.node("Identity", [s])
        (out,) = b.node("Add", [name, s2])
        b.values.append((out, shape))


def _dims(st):
    return st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@functools.cache
def small_models():
    """A hypothesis strategy of small, valid, checker-clean float32 ONNX models (opset 18).

    1-3 inputs with small static shapes (some with a symbolic leading ``batch`` dim),
    1-12 random steps from a menu of ops (see :func:`_step`), 1-2 outputs.
    """
    from hypothesis import strategies as st

    @st.composite
    def build(draw) -> onnx.ModelProto:
        b = _GraphBuilder(draw, st)
        inputs = []
        for i in range(draw(st.integers(1, 3))):
            shape: tuple = draw(_dims(st))
            if shape and draw(st.booleans()):
                shape = ("batch", *shape[1:])
            name = f"x{i}"
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
            b.values.append((name, shape))
        for _ in range(draw(st.integers(1, 12))):
            _step(b)
        n_inputs = len(inputs)
        candidates = b.values[n_inputs:] or b.values
        n_out = min(len(candidates), draw(st.integers(1, 2)))
        chosen = draw(
            st.lists(
                st.sampled_from(candidates),
                min_size=n_out,
                max_size=n_out,
                unique_by=lambda v: v[0],
            )
        )
        outputs = []
        for name, shape in chosen:
            if name in {i.name for i in inputs}:  # an output must not be a graph input
                (name,) = b.node("Identity", [name])
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        graph = helper.make_graph(b.nodes, "random", inputs, outputs, b.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        return model

    return build()


def fixed_feed(model: onnx.ModelProto, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float inputs for ``model``; symbolic dims become ``batch``."""
    rng = np.random.default_rng(seed)
    feed = {}
    for vi in model.graph.input:
        dims = [
            d.dim_value if d.HasField("dim_value") else batch for d in vi.type.tensor_type.shape.dim
        ]
        feed[vi.name] = rng.standard_normal(dims).astype(np.float32)
    return feed


def run_ort(model: onnx.ModelProto | str | os.PathLike, feed: dict[str, np.ndarray]) -> list:
    """Outputs of ``model`` on onnxruntime's CPU provider with its rewrites off, in order."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else os.fspath(model)
    session = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    return session.run(None, {k: v for k, v in feed.items() if k in wanted})
