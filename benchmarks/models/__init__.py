"""The benchmark model zoo: models written in plain torch, exported to ONNX once and cached.

Suites (:data:`SUITES`):

- ``taso``: the graphs TASO (SOSP'19) and Tensat (MLSys'21) report on: ResNet-50, ResNeXt-50
  (32x4d), NASNet-A Mobile, NasRNN, Inception-v3, SqueezeNet 1.1, VGG-19, BERT-base;
- ``modern``: ViT-B/16, GPT-2 small, a Llama-style decoder, MobileNetV2, ConvNeXt-tiny, the T5-small
  encoder;
- ``quick``: small versions of a few of these that export and run in seconds (CI).

Every model has random weights drawn with a fixed seed (``torch.manual_seed`` in its builder) and
is in eval mode; no weights are downloaded. Each family lives in its own module, whose docstring
gives the architecture and the parameter counts.

>>> from benchmarks import models
>>> module, inputs = models.build("resnet50")          # doctest: +SKIP
>>> path = models.export("resnet50")                   # doctest: +SKIP (cached ONNX file)

:func:`export` writes ``torch.onnx.export(model, args, f, dynamo=True)`` (falling back to the
TorchScript exporter, ``dynamo=False``, only when the dynamo exporter raises) into the cache
(``$GRAPHOPT_CACHE_DIR/models``, default ``~/.cache/graphopt/models``), keyed by model name,
batch size, torch version and a hash of the model's source. Shapes are static (the batch size
is part of the key). Beside each ``<key>.onnx`` a ``<key>.json`` sidecar records the exporter
used, the parameter count, the export time and the inputs. The file is written to a temporary
folder and renamed into place, so an interrupted export never leaves a broken cache entry.

The registry itself imports neither torch nor the model modules: listing models works without
the ``torch`` extra.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MODELS",
    "SUITES",
    "ModelSpec",
    "TensorSpec",
    "build",
    "cache_dir",
    "cache_key",
    "count_parameters",
    "example_inputs",
    "export",
    "get",
    "models_in",
    "read_sidecar",
]

#: Bump when the export procedure changes in a way that invalidates cached files.
EXPORT_FORMAT = 1


@dataclass(frozen=True)
class TensorSpec:
    """One model input: ``shape`` may use the string ``"batch"`` for the batch dimension.

    ``dtype`` is ``"float32"`` (standard normal values) or ``"int64"``; integer inputs are token
    ids uniform in ``[low, high)``, or all ``fill`` when ``fill`` is set (attention masks).
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str = "float32"
    low: int = 0
    high: int = 0
    fill: int | None = None

    def concrete_shape(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == "batch" else int(d) for d in self.shape)


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    - ``name``: registry name (also the ONNX file stem);
    - ``suites``: the suites it belongs to;
    - ``source``: ``"module:function"`` inside :mod:`benchmarks.models` building the torch module
      (called with ``kwargs``; it seeds torch itself and returns the module in eval mode);
    - ``inputs``: the example inputs (shapes, dtypes, value ranges), see :meth:`example_inputs`;
    - ``output_names``: names of the ONNX outputs;
    - ``description``, ``reference`` (the paper);
    - ``expected_params``: the parameter count the model should have, from ``params_source``
      (the published figure, or "derived" from the configuration when nothing is published);
    - ``transformer``: for transformer models, the arguments onnxruntime.transformers' optimizer
      needs (``model_type``, ``num_heads``, ``hidden_size``); None for the others.
    """

    name: str
    suites: tuple[str, ...]
    source: str
    inputs: tuple[TensorSpec, ...]
    description: str
    reference: str
    expected_params: int
    params_source: str = "published"
    output_names: tuple[str, ...] = ("output",)
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    transformer: Mapping[str, Any] | None = None

    @property
    def module_name(self) -> str:
        return f"{__name__}.{self.source.partition(':')[0]}"

    @property
    def builder(self) -> Callable[[], Any]:
        """The builder: a callable returning the torch module (imports torch)."""
        module, _, func = self.source.partition(":")
        fn = getattr(importlib.import_module(f"{__name__}.{module}"), func)
        return functools.partial(fn, **self.kwargs)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    def example_inputs(self, batch: int = 1, seed: int = 0) -> tuple:
        """Deterministic example inputs (torch tensors) for batch size ``batch``."""
        import torch

        gen = torch.Generator().manual_seed(seed)
        out = []
        for t in self.inputs:
            shape = t.concrete_shape(batch)
            if t.dtype == "int64":
                if t.fill is not None:
                    out.append(torch.full(shape, t.fill, dtype=torch.int64))
                else:
                    out.append(torch.randint(t.low, t.high, shape, generator=gen))
            elif t.dtype == "float32":
                out.append(torch.randn(shape, generator=gen))
            else:  # pragma: no cover - registry error
                raise ValueError(f"{self.name}: unsupported input dtype {t.dtype}")
        return tuple(out)


def _tf(model_type: str, num_heads: int, hidden_size: int) -> dict[str, Any]:
    return {"model_type": model_type, "num_heads": num_heads, "hidden_size": hidden_size}


def _image(size: int = 224) -> tuple[TensorSpec, ...]:
    return (TensorSpec("input", ("batch", 3, size, size)),)


def _tokens(vocab: int, seq: int, mask: bool = False) -> tuple[TensorSpec, ...]:
    ids = TensorSpec("input_ids", ("batch", seq), "int64", 0, vocab)
    if not mask:
        return (ids,)
    return ids, TensorSpec("attention_mask", ("batch", seq), "int64", fill=1)


_TASO, _MODERN, _QUICK = ("taso",), ("modern",), ("quick",)

_SPECS = [
    # --- taso -----------------------------------------------------------------------------
    ModelSpec(
        "resnet50", _TASO, "resnet:resnet50", _image(),
        "ResNet-50 v1.5 (bottleneck blocks [3, 4, 6, 3]), 1000 classes",
        "He et al., Deep Residual Learning for Image Recognition, CVPR 2016",
        25_557_032,
    ),
    ModelSpec(
        "resnext50_32x4d", _TASO, "resnet:resnext50_32x4d", _image(),
        "ResNeXt-50 32x4d (grouped 3x3 convolutions, 32 groups of width 4)",
        "Xie et al., Aggregated Residual Transformations for Deep Neural Networks, CVPR 2017",
        25_028_904,
    ),
    ModelSpec(
        "nasnet_a_mobile", _TASO, "nasnet:nasnet_a_mobile", _image(),
        "NASNet-A Mobile 4@1056: published normal/reduction cells (separable convs, pooling "
        "branches, cell concatenation)",
        "Zoph et al., Learning Transferable Architectures for Scalable Image Recognition, "
        "CVPR 2018",
        5_300_000,
    ),
    ModelSpec(
        "nasrnn", _TASO, "nasrnn:nasrnn",
        (TensorSpec("input", (5, "batch", 512)),),
        "NAS recurrent cell (TASO's NasRNN), hidden 512, unrolled over 5 steps, shared weights",
        "Zoph & Le, Neural Architecture Search with Reinforcement Learning, ICLR 2017",
        4_194_816, "derived: 16 x 512 x 512 weights + 512 initial state (TASO's graph)",
    ),
    ModelSpec(
        "inception_v3", _TASO, "inception:inception_v3", _image(299),
        "Inception-v3 at 299x299, without the auxiliary classifier",
        "Szegedy et al., Rethinking the Inception Architecture for Computer Vision, CVPR 2016",
        23_834_568, "published (torchvision's 27,161,264 less the 3,326,696 of the aux head)",
    ),
    ModelSpec(
        "squeezenet1_1", _TASO, "squeezenet:squeezenet1_1", _image(),
        "SqueezeNet 1.1 (Fire modules)",
        "Iandola et al., SqueezeNet: AlexNet-level accuracy with 50x fewer parameters, 2016",
        1_235_496,
    ),
    ModelSpec(
        "vgg19", _TASO, "vgg:vgg19", _image(),
        "VGG-19 (configuration E, no batch norm)",
        "Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image "
        "Recognition, ICLR 2015",
        143_667_240,
    ),
    ModelSpec(
        "bert_base", _TASO, "bert:bert_base", _tokens(30522, 128, mask=True),
        "BERT-base encoder with embeddings, no pooler: 12 layers, hidden 768, 12 heads, seq 128",
        "Devlin et al., BERT: Pre-training of Deep Bidirectional Transformers, NAACL 2019",
        110_000_000, "published (~110M with embeddings; 108,891,648 here without the pooler)",
        output_names=("last_hidden_state",),
        transformer=_tf("bert", 12, 768),
    ),
    # --- modern ---------------------------------------------------------------------------
    ModelSpec(
        "vit_b16", _MODERN, "vit:vit_b16", _image(),
        "ViT-B/16 at 224x224 (12 layers, 768, 12 heads), class-token head",
        "Dosovitskiy et al., An Image is Worth 16x16 Words, ICLR 2021",
        86_567_656,
        transformer=_tf("vit", 12, 768),
    ),
    ModelSpec(
        "gpt2_small", _MODERN, "gpt2:gpt2_small", _tokens(50257, 128),
        "GPT-2 small LM (12 layers, 768, 12 heads, tied head), seq 128, no KV cache",
        "Radford et al., Language Models are Unsupervised Multitask Learners, 2019",
        124_439_808, output_names=("logits",), transformer=_tf("gpt2", 12, 768),
    ),
    ModelSpec(
        "llama_small", _MODERN, "llama:llama_small", _tokens(32000, 128),
        "Llama-style decoder LM: RMSNorm, rotary, GQA (8 heads / 2 KV heads), SwiGLU; "
        "4 layers, hidden 512, seq 128",
        "Touvron et al., LLaMA: Open and Efficient Foundation Language Models, 2023",
        44_831_232, "derived from the configuration (no published model of this size)",
        output_names=("logits",),
    ),
    ModelSpec(
        "mobilenet_v2", _MODERN, "mobilenet:mobilenet_v2", _image(),
        "MobileNetV2 width 1.0 (inverted residuals, ReLU6)",
        "Sandler et al., MobileNetV2: Inverted Residuals and Linear Bottlenecks, CVPR 2018",
        3_504_872,
    ),
    ModelSpec(
        "convnext_tiny", _MODERN, "convnext:convnext_tiny", _image(),
        "ConvNeXt-tiny (depths 3-3-9-3, widths 96-768)",
        "Liu et al., A ConvNet for the 2020s, CVPR 2022",
        28_589_128,
    ),
    ModelSpec(
        "t5_small_encoder", _MODERN, "t5:t5_small_encoder", _tokens(32128, 128),
        "T5-small encoder: 6 layers, d_model 512, relative position bias, RMS LayerNorm, seq 128",
        "Raffel et al., Exploring the Limits of Transfer Learning with a Unified Text-to-Text "
        "Transformer, JMLR 2020",
        35_330_816, "published (T5-small's encoder with the shared embedding, ~35M)",
        output_names=("last_hidden_state",),
        transformer=_tf("t5", 8, 512),
    ),
    # --- quick ----------------------------------------------------------------------------
    ModelSpec(
        "resnet_tiny", _QUICK, "resnet:resnet_tiny", _image(64),
        "tiny ResNet: BasicBlocks [1, 1, 1, 1], widths 16-128, 10 classes, 64x64",
        "He et al., CVPR 2016", 308_826, "derived",
    ),
    ModelSpec(
        "mobilenet_v2_tiny", _QUICK, "mobilenet:mobilenet_v2_tiny", _image(64),
        "MobileNetV2 width 0.25, 10 classes, 64x64",
        "Sandler et al., CVPR 2018", 250_922, "derived",
    ),
    ModelSpec(
        "bert_tiny", _QUICK, "bert:bert_tiny", _tokens(1000, 32, mask=True),
        "BERT encoder: 2 layers, hidden 128, 2 heads, vocab 1000, seq 32",
        "Devlin et al., NAACL 2019", 590_592, "derived",
        output_names=("last_hidden_state",),
        transformer=_tf("bert", 2, 128),
    ),
    ModelSpec(
        "gpt2_tiny", _QUICK, "gpt2:gpt2_tiny", _tokens(1000, 32),
        "GPT-2 LM: 2 layers, hidden 128, 2 heads, vocab 1000, seq 32",
        "Radford et al., 2019", 532_992, "derived", output_names=("logits",),
        transformer=_tf("gpt2", 2, 128),
    ),
    ModelSpec(
        "llama_tiny", _QUICK, "llama:llama_tiny", _tokens(1000, 32),
        "Llama-style LM: 2 layers, hidden 128, 4 heads / 2 KV heads, vocab 1000, seq 32",
        "Touvron et al., 2023", 649_856, "derived", output_names=("logits",),
    ),
    ModelSpec(
        "nasrnn_tiny", _QUICK, "nasrnn:nasrnn_tiny", (TensorSpec("input", (3, "batch", 64)),),
        "NAS recurrent cell, hidden 64, 3 steps",
        "Zoph & Le, ICLR 2017", 65_600, "derived",
    ),
]  # fmt: skip

#: Every registered model by name.
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}

#: Suite name -> model names, in reporting order.
SUITES: dict[str, list[str]] = {
    suite: [s.name for s in _SPECS if suite in s.suites] for suite in ("taso", "modern", "quick")
}


def get(name: str) -> ModelSpec:
    """The :class:`ModelSpec` called ``name`` (``KeyError`` listing the known names if none)."""
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}") from None


def models_in(suite: str) -> list[str]:
    """The model names of ``suite`` (``KeyError`` listing the suites if unknown)."""
    try:
        return list(SUITES[suite])
    except KeyError:
        raise KeyError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}") from None


def count_parameters(module) -> int:
    """Parameters of a torch module; tied parameters count once, buffers not at all."""
    return sum(p.numel() for p in module.parameters())


def example_inputs(name: str, batch: int = 1, seed: int = 0) -> tuple:
    """The example inputs of model ``name`` (torch tensors)."""
    return get(name).example_inputs(batch, seed)


def build(name: str, batch: int = 1):
    """``(module, example_inputs)``: the torch module of ``name`` (eval mode, fixed-seed random
    weights) and example inputs for batch size ``batch``."""
    spec = get(name)
    module = spec.builder()
    return module, spec.example_inputs(batch)


# ---------------------------------------------------------------------------------------------
# export and cache
# ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$GRAPHOPT_CACHE_DIR/models``, or ``~/.cache/graphopt/models``."""
    root = os.environ.get("GRAPHOPT_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "graphopt"
    return base / "models"


_default_cache_dir = cache_dir


def _source_hash(spec: ModelSpec) -> str:
    """Hash of what determines the exported graph: the model's module and the shared layers'
    source, and the spec (builder, arguments, inputs, output names)."""
    digest = hashlib.sha256()
    for module in (spec.module_name, f"{__name__}._common"):
        origin = importlib.util.find_spec(module).origin
        digest.update(Path(origin).read_bytes())
    digest.update(
        repr((spec.source, sorted(spec.kwargs.items()), spec.inputs, spec.output_names)).encode()
    )
    digest.update(str(EXPORT_FORMAT).encode())
    return digest.hexdigest()[:16]


def _torch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("torch")
    except PackageNotFoundError:  # pragma: no cover
        import torch

        return torch.__version__


def cache_key(name: str, batch: int = 1) -> str:
    """``<name>-b<batch>-torch<version>-<source hash>``: the file stem of a cached export."""
    spec = get(name)
    torch_version = _torch_version().replace("+", "_")
    return f"{name}-b{batch}-torch{torch_version}-{_source_hash(spec)}"


def read_sidecar(path: str | os.PathLike) -> dict:
    """The JSON sidecar written beside an exported model (``model.onnx`` -> ``model.json``)."""
    return json.loads(Path(path).with_suffix(".json").read_text())


def _export_dynamo(module, inputs, path: Path, spec: ModelSpec) -> None:
    import torch

    # torch's ONNX registry logs a warning per missing torchvision op on every export
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        _dynamo_export_call(torch, module, inputs, path, spec)
    finally:
        registration.setLevel(level)


def _dynamo_export_call(torch, module, inputs, path: Path, spec: ModelSpec) -> None:
    torch.onnx.export(
        module,
        inputs,
        str(path),
        dynamo=True,
        input_names=list(spec.input_names),
        output_names=list(spec.output_names),
        external_data=False,
        verbose=False,
    )


def _export_torchscript(module, inputs, path: Path, spec: ModelSpec) -> None:
    import torch

    torch.onnx.export(
        module,
        inputs,
        str(path),
        dynamo=False,
        input_names=list(spec.input_names),
        output_names=list(spec.output_names),
        opset_version=18,
    )


def export(
    name: str, batch: int = 1, cache_dir: str | os.PathLike | None = None, *, force: bool = False
) -> Path:
    """The ONNX export of model ``name`` at batch size ``batch``, from the cache when present.

    Exports with ``torch.onnx.export(..., dynamo=True)`` and static shapes; if that raises,
    retries with ``dynamo=False`` and records the first error in the sidecar. ``cache_dir``
    defaults to :func:`cache_dir`; ``force`` re-exports even when cached. The model and its
    sidecar are written into a temporary folder inside the cache folder and renamed into place
    (sidecar last: a cache entry counts only when both exist), so an interrupted export leaves no
    broken entry.
    """
    import onnx
    import torch

    spec = get(name)
    folder = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    key = cache_key(name, batch)
    path, sidecar = folder / f"{key}.onnx", folder / f"{key}.json"
    if path.exists() and sidecar.exists() and not force:
        return path

    module, inputs = build(name, batch)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder))
    try:
        staged = staging / "model.onnx"
        exporter, dynamo_error = "dynamo", None
        start = time.perf_counter()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:
                _export_dynamo(module, inputs, staged, spec)
            except Exception as exc:  # noqa: BLE001 - the documented fallback
                exporter, dynamo_error = "torchscript", f"{type(exc).__name__}: {exc}"[:2000]
                for leftover in staging.iterdir():
                    leftover.unlink()
                _export_torchscript(module, inputs, staged, spec)
        seconds = time.perf_counter() - start
        extra = [p.name for p in staging.iterdir() if p != staged]
        if extra:
            raise RuntimeError(f"{name}: the export wrote unexpected extra files {extra}")
        onnx.checker.check_model(str(staged))
        proto = onnx.load(str(staged), load_external_data=False)
        meta = {
            "name": name,
            "batch": batch,
            "exporter": exporter,
            "dynamo_error": dynamo_error,
            "parameters": count_parameters(module),
            "export_seconds": round(seconds, 3),
            "file_bytes": staged.stat().st_size,
            "nodes": len(proto.graph.node),
            "opset": {o.domain or "ai.onnx": o.version for o in proto.opset_import},
            "inputs": [
                {"name": t.name, "shape": list(t.concrete_shape(batch)), "dtype": t.dtype}
                for t in spec.inputs
            ],
            "outputs": list(spec.output_names),
            "torch": _torch_version(),
            "onnx": onnx.__version__,
            "source_hash": _source_hash(spec),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        del proto
        staged_meta = staging / "model.json"
        staged_meta.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(staged, path)
        os.replace(staged_meta, sidecar)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def _check_registry() -> None:
    for spec in _SPECS:
        module = spec.source.partition(":")[0]
        if not (Path(__file__).parent / f"{module}.py").exists():  # pragma: no cover
            raise ImportError(f"{spec.name}: no module {module}.py")
    if len(MODELS) != len(_SPECS):  # pragma: no cover
        raise ValueError("duplicate model names in the registry")


_check_registry()
