"""ONNX <-> IR: the only package that touches onnx protobufs.

``load`` reads a model file lazily (weights stay in the file until needed),
``import_model``/``export_model`` translate between ModelProto and the IR,
``save`` streams a graph to disk atomically, and ``to_proto`` gives an
in-memory ModelProto for API callers.
"""

from __future__ import annotations

import os

import onnx

from optimizer.errors import ModelLoadError
from optimizer.ir import Graph
from optimizer.onnx_io import schemas as _schemas  # noqa: F401 - installs the registry hooks
from optimizer.onnx_io.exporter import export_model
from optimizer.onnx_io.importer import ImportStats, base_dir_of, import_model
from optimizer.onnx_io.wire import load_model_lazy, materialize, save_model_streaming

__all__ = [
    "ImportStats",
    "export_model",
    "import_model",
    "load",
    "load_proto",
    "proto_summary",
    "stored_size",
    "save",
    "to_proto",
]


def proto_summary(model: onnx.ModelProto) -> tuple[dict[str, int], int]:
    """Op histogram and parameter count of a ModelProto as stored (before any import merging)."""
    histogram: dict[str, int] = {}
    params = 0
    for node in model.graph.node:
        key = (
            f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        )
        if key == "Constant":
            params += sum(_elements(a.t) for a in node.attribute if a.name == "value")
            continue
        histogram[key] = histogram.get(key, 0) + 1
    params += sum(_elements(t) for t in model.graph.initializer)
    return histogram, params


def stored_size(path: str | os.PathLike, model: onnx.ModelProto) -> int:
    """Bytes a model occupies on disk: its file plus the external-data files it references."""
    base = base_dir_of(path)
    files = {os.path.realpath(path)}
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            files.add(os.path.realpath(os.path.join(base, location)))
    return sum(os.path.getsize(f) for f in files if os.path.isfile(f))


def _elements(tensor: onnx.TensorProto) -> int:
    count = 1
    for d in tensor.dims:
        count *= d
    return count


def load_proto(path: str | os.PathLike) -> onnx.ModelProto:
    """Read a model file without reading its weights (they become references into the file)."""
    if not os.path.exists(path):
        raise ModelLoadError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelLoadError(f"{path}: is a folder, not an ONNX file")
    return load_model_lazy(path)


def load(path: str | os.PathLike) -> tuple[Graph, ImportStats]:
    """Load a model file into the IR; weights load lazily from the file."""
    return import_model(load_proto(path), base_dir_of(path))


def to_proto(graph: Graph) -> onnx.ModelProto:
    """An in-memory ModelProto of ``graph`` with every weight inlined."""
    # Absolute locations come only from our exporter (unchanged weights left where they lie);
    # the importer refuses them in input models.
    return materialize(export_model(graph), None, allow_absolute=True)


def save(graph: Graph, path: str | os.PathLike, *, external_data: bool | None = None) -> None:
    """Write ``graph`` to ``path`` atomically, streaming weights from where they lie.

    ``external_data``: None chooses a separate ``.data`` file only when the
    model would exceed protobuf's 2 GB limit.
    """
    save_model_streaming(
        export_model(graph), path, base_dir=None, external_data=external_data, allow_absolute=True
    )
