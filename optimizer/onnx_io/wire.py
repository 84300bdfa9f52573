"""Load and save ONNX models without copying their weights into Python memory.

``onnx.load`` parses the whole file into one protobuf message, so a 100 MB model costs at
least 100 MB of heap (and usually 2-3x that once it is re-serialized), and a model over
2 GB cannot be read at all: protobuf refuses messages of 2 GiB or more.

This module walks the protobuf wire format by hand instead. :func:`load_model_lazy` parses
everything except the ``raw_data`` of large graph initializers, which it turns into
ordinary ONNX external-data references pointing back into the model file itself (the
file *is* the external-data file for its own weights). :func:`save_model_streaming`
writes such a skeleton out again, copying each payload from its source file in chunks,
either inline (splicing the bytes into the graph field by hand) or into a ``.data`` file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from onnx import GraphProto, ModelProto, TensorProto, numpy_helper

from optimizer.errors import ModelLoadError, UnsafeExternalDataError, UnsupportedModelError

_MODEL_GRAPH, _GRAPH_INITIALIZER = 7, 5  # ModelProto.graph, GraphProto.initializer
_RAW_DATA, _EXTERNAL_DATA, _DATA_LOCATION = 9, 13, 14  # TensorProto fields
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_PROTOBUF_LIMIT = 2**31  # protobuf cannot parse a message this large
_AUTO_EXTERNAL = int(1.8 * 2**30)  # leave headroom under the limit for the graph itself
_CHUNK = 16 * 2**20
_ALIGN = 4096


class _MalformedError(Exception):
    def __init__(self, pos: int, problem: str) -> None:
        super().__init__(f"{problem} at byte {pos}")


def _read_varint(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _MalformedError(pos, "truncated protobuf")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:  # a valid varint has at most 10 bytes
            raise _MalformedError(pos, "varint too long")


def _fields(
    buf: bytes | memoryview, pos: int, end: int
) -> Iterator[tuple[int, int, int, int, int]]:
    """Yield ``(field, wire_type, start, value_start, stop)`` for each field in buf[pos:end]."""
    while pos < end:
        start = pos
        key, pos = _read_varint(buf, pos, end)
        field, wire_type = key >> 3, key & 7
        if field == 0:
            raise _MalformedError(start, "invalid field number 0")
        value_start = pos
        if wire_type == _VARINT:
            _, pos = _read_varint(buf, pos, end)
        elif wire_type == _I64:
            pos += 8
        elif wire_type == _I32:
            pos += 4
        elif wire_type == _LEN:
            size, pos = _read_varint(buf, pos, end)
            value_start = pos
            pos += size
        else:  # groups (3, 4) do not occur in ONNX; 6 and 7 are not wire types at all
            raise _MalformedError(start, f"unsupported wire type {wire_type}")
        if pos > end:
            raise _MalformedError(end, "truncated protobuf")
        yield field, wire_type, start, value_start, pos


def _expect_len(field: int, wire_type: int, start: int) -> None:
    if wire_type != _LEN:
        raise _MalformedError(start, f"field {field} has wire type {wire_type}, expected 2")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field_size(field: int, size: int) -> int:
    return len(_varint(field << 3 | _LEN)) + len(_varint(size)) + size


def _scan_tensor(buf: memoryview, start: int, stop: int, min_lazy: int) -> tuple[bytes, int, int]:
    """Return the tensor's bytes and, if its raw_data is left in the file, (offset, length)."""
    kept: list[tuple[int, int]] = []
    raw: tuple[int, int] | None = None
    location, has_external = 0, False
    for field, wire_type, f_start, v_start, f_stop in _fields(buf, start, stop):
        if field == _RAW_DATA:
            _expect_len(field, wire_type, f_start)
            raw = (v_start, f_stop - v_start)  # protobuf keeps the last occurrence
            continue
        if field == _DATA_LOCATION and wire_type == _VARINT:
            # protobuf truncates enum varints to int32, so 2**32 + 1 also means EXTERNAL
            location = _read_varint(buf, v_start, f_stop)[0] & 0xFFFFFFFF
        has_external |= field == _EXTERNAL_DATA
        kept.append((f_start, f_stop))
    # A tensor that already claims external data keeps its bytes as they are.
    if raw is None or raw[1] <= min_lazy or location == TensorProto.EXTERNAL or has_external:
        return bytes(buf[start:stop]), -1, 0
    return b"".join(buf[a:b] for a, b in kept), raw[0], raw[1]


def _scan_model(buf: memoryview, min_lazy: int) -> tuple[bytes, list[tuple[int, int, int]]]:
    """Re-encode the model without large initializer payloads; list (index, offset, length)."""
    model_parts: list[bytes] = []
    graph_parts: list[bytes] = []
    lazy: list[tuple[int, int, int]] = []
    n_init, has_graph = 0, False
    for field, wire_type, start, v_start, stop in _fields(buf, 0, len(buf)):
        if field != _MODEL_GRAPH:
            model_parts.append(bytes(buf[start:stop]))
            continue
        _expect_len(field, wire_type, start)
        has_graph = True  # repeated occurrences of a message field merge, so concatenate them
        for g_field, g_wire, g_start, g_vstart, g_stop in _fields(buf, v_start, stop):
            if g_field != _GRAPH_INITIALIZER:
                graph_parts.append(bytes(buf[g_start:g_stop]))
                continue
            _expect_len(g_field, g_wire, g_start)
            tensor, offset, length = _scan_tensor(buf, g_vstart, g_stop, min_lazy)
            graph_parts += [_varint(_GRAPH_INITIALIZER << 3 | _LEN), _varint(len(tensor)), tensor]
            if offset >= 0:
                lazy.append((n_init, offset, length))
            n_init += 1
    if has_graph:
        graph = b"".join(graph_parts)
        model_parts += [_varint(_MODEL_GRAPH << 3 | _LEN), _varint(len(graph)), graph]
    return b"".join(model_parts), lazy


def load_model_lazy(path: str | os.PathLike[str], *, min_lazy_bytes: int = 1024) -> ModelProto:
    """Parse an ONNX file, leaving large initializer payloads in the file.

    Every top-level graph initializer whose ``raw_data`` exceeds ``min_lazy_bytes`` comes
    back with ``data_location = EXTERNAL`` and ``external_data`` entries ``location`` (the
    file's basename), ``offset`` and ``length`` that point at the payload inside the file,
    so onnx's own external-data helpers (``base_dir`` = the file's folder) resolve them.
    Real external data that the file references is not touched or validated here.

    Raises:
        ModelLoadError: the file is missing, unreadable, empty, malformed or not ONNX.
    """
    name = os.fspath(path)
    try:
        info = os.stat(name)
        if stat.S_ISDIR(info.st_mode):
            raise ModelLoadError(f"{name}: is a directory, not a model file")
        if not stat.S_ISREG(info.st_mode):
            raise ModelLoadError(f"{name}: not a regular file")
        if info.st_size == 0:
            raise ModelLoadError(f"{name}: empty file")
        with open(name, "rb") as f:
            # mmap only touches the pages the scanner reads, and it skips over payloads.
            data = np.memmap(f, dtype=np.uint8, mode="r")
            buf = memoryview(data)
            try:
                skeleton, lazy = _scan_model(buf, min_lazy_bytes)
            finally:
                buf.release()
                del data
    except _MalformedError as exc:
        raise ModelLoadError(f"{name}: {exc}") from None
    except (OSError, ValueError) as exc:  # ValueError: np.memmap of a file emptied meanwhile
        raise ModelLoadError(
            f"{name}: cannot read: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    model = ModelProto()
    try:
        model.ParseFromString(skeleton)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{name}: not a valid ONNX protobuf: {exc}") from None
    # Random bytes are occasionally a valid protobuf; a model has at least one of these.
    if not model.ir_version and not model.HasField("graph"):
        raise ModelLoadError(f"{name}: not an ONNX model (no ir_version and no graph)")
    location = os.path.basename(name)
    for index, offset, length in lazy:
        tensor = model.graph.initializer[index]
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", location), ("offset", offset), ("length", length)):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    return model


def resolve_external_location(base_dir: str | os.PathLike[str], location: str) -> Path:
    """Return the file ``location`` names relative to ``base_dir``, refusing any escape.

    Raises:
        UnsafeExternalDataError: ``location`` is empty or absolute, or it resolves (after
            ``..`` and symlinks) to a path outside ``base_dir``.
    """
    if not location or "\x00" in location:
        raise UnsafeExternalDataError(f"invalid external data location {location!r}")
    # Also refuse Windows-style roots and drives, whatever platform reads the model.
    if os.path.isabs(location) or location.startswith(("\\", "/")) or location[1:2] == ":":
        raise UnsafeExternalDataError(f"external data location {location!r} is absolute")
    base = Path(os.path.realpath(base_dir))
    target = Path(os.path.realpath(base / location))
    if not target.is_relative_to(base) or target == base:
        raise UnsafeExternalDataError(
            f"external data location {location!r} resolves outside {os.fspath(base_dir)}"
        )
    return target


@dataclass(frozen=True)
class _Region:
    path: Path
    offset: int
    length: int


def _region(
    tensor: TensorProto, base_dir: str | os.PathLike[str] | None, absolute: bool
) -> _Region:
    """Locate and bounds-check an external tensor's payload."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    location, what = info.get("location", ""), f"tensor {tensor.name!r}"
    if os.path.isabs(location) and absolute:
        path = Path(location)
    elif base_dir is None and not os.path.isabs(location):
        raise ModelLoadError(f"{what}: relative external data {location!r} but no base_dir")
    else:
        path = resolve_external_location(base_dir or "", location)
    try:
        offset = int(info.get("offset", 0))
        size = path.stat().st_size
        length = int(info["length"]) if "length" in info else size - offset
    except ValueError:
        raise ModelLoadError(f"{what}: external data offset/length is not an integer") from None
    except OSError as exc:
        raise ModelLoadError(f"{what}: cannot read {path}: {exc.strerror or exc}") from None
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelLoadError(f"{what}: external data [{offset}, +{length}) is past end of {path}")
    return _Region(path, offset, length)


def _is_external(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL


def read_tensor_bytes(
    tensor: TensorProto, base_dir: str | os.PathLike[str] | None
) -> memoryview | np.ndarray:
    """Return a tensor's little-endian data bytes without copying external payloads.

    External data comes back as a read-only ``np.memmap`` of uint8 (pages are read on
    access); in-memory ``raw_data`` as a ``memoryview``; typed fields (``float_data`` etc.)
    are converted with ``onnx.numpy_helper``.
    """
    if _is_external(tensor):
        region = _region(tensor, base_dir, absolute=False)
        if region.length == 0:  # mmap cannot map zero bytes
            return memoryview(b"")
        return np.memmap(region.path, np.uint8, "r", region.offset, (region.length,))
    if tensor.HasField("raw_data") or tensor.data_type == TensorProto.UNDEFINED:
        return memoryview(tensor.raw_data)
    if tensor.data_type == TensorProto.STRING:
        raise ValueError(f"tensor {tensor.name!r}: string tensors have no raw byte form")
    array = numpy_helper.to_array(tensor)
    return memoryview(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())


def _read_region(region: _Region) -> bytes:
    with open(region.path, "rb") as f:
        f.seek(region.offset)
        data = f.read(region.length)
    if len(data) != region.length:  # the file shrank since it was checked
        raise ModelLoadError(f"{region.path}: external data truncated")
    return data


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf 7 removed FieldDescriptor.label; versions before 5.28 lack is_repeated.
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return bool(field.label == field.LABEL_REPEATED)


def _iter_tensors(message: Message) -> Iterator[TensorProto]:
    """Yield every TensorProto nested anywhere in message (attributes, subgraphs, ...)."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        for item in value if _is_repeated(field) else (value,):
            if isinstance(item, TensorProto):
                yield item  # TensorProto holds no further tensors; don't touch raw_data
            else:
                yield from _iter_tensors(item)


def _inline(tensor: TensorProto, base_dir: str | os.PathLike[str] | None, absolute: bool) -> None:
    tensor.raw_data = _read_region(_region(tensor, base_dir, absolute))
    tensor.ClearField("data_location")  # as if the tensor had never been external
    del tensor.external_data[:]


def materialize(
    model: ModelProto, base_dir: str | os.PathLike[str] | None, *, allow_absolute: bool = False
) -> ModelProto:
    """Return a copy of model with every external tensor loaded into ``raw_data``.

    Relative locations must stay inside ``base_dir``; absolute ones are refused unless
    ``allow_absolute`` (only for references built in-process, never from a file).
    """
    copy = ModelProto()
    copy.CopyFrom(model)
    for tensor in _iter_tensors(copy):
        if _is_external(tensor):
            _inline(tensor, base_dir, allow_absolute)
    return copy


def _copy_without(source: Message, target: Message, skip: str) -> None:
    """Copy all set fields except ``skip`` (so big initializer lists are not deep-copied)."""
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if _is_repeated(field):
            getattr(target, field.name).extend(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def _header(tensor: TensorProto) -> TensorProto:
    """The tensor without its payload or external-data description."""
    header = TensorProto()
    _copy_without(tensor, header, "raw_data")
    header.ClearField("data_location")
    del header.external_data[:]
    return header


class _Staged:
    """Temporary files next to their destinations, renamed into place only on commit."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, Path]] = []
        self.files: list[BinaryIO] = []

    def open(self, dest: Path) -> BinaryIO:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        self.pending.append((tmp, dest))
        # mkstemp makes 0600 files; keep an existing file's mode, else the usual 0644.
        with contextlib.suppress(OSError, AttributeError):  # no fchmod on Windows
            os.fchmod(fd, stat.S_IMODE(dest.stat().st_mode) if dest.exists() else 0o644)
        self.files.append(os.fdopen(fd, "wb"))
        return self.files[-1]

    def commit(self) -> None:
        for tmp, dest in self.pending:  # data file first: the model must never dangle
            os.replace(tmp, dest)
        self.pending.clear()

    def discard(self) -> None:
        for f in self.files:
            f.close()
        for tmp, _ in self.pending:
            Path(tmp).unlink(missing_ok=True)


def _finish(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())
    f.close()


class _Copier:
    """Streams file regions into an output in fixed-size chunks, reusing one buffer."""

    def __init__(self) -> None:
        self.buffer = bytearray(_CHUNK)
        self.files: dict[Path, BinaryIO] = {}

    def copy(self, region: _Region, out: BinaryIO) -> None:
        src = self.files.get(region.path)
        if src is None:
            src = self.files[region.path] = open(region.path, "rb", buffering=0)  # noqa: SIM115
        src.seek(region.offset)
        view, left = memoryview(self.buffer), region.length
        while left:
            got = src.readinto(view[: min(left, _CHUNK)])
            if not got:
                raise ModelLoadError(f"{region.path}: external data truncated")
            out.write(view[:got])
            left -= got

    def close(self) -> None:
        for f in self.files.values():
            f.close()


def save_model_streaming(
    model: ModelProto,
    path: str | os.PathLike[str],
    *,
    base_dir: str | os.PathLike[str] | None,
    external_data: bool | None = None,
    size_threshold: int = 1024,
    allow_absolute: bool = False,
) -> None:
    """Write model to path atomically, streaming external initializer payloads.

    External tensors' locations are resolved against ``base_dir`` (absolute locations only
    with ``allow_absolute``). With ``external_data`` False (or None and under 1.8 GiB) the
    result is one self-contained file; otherwise raw payloads over ``size_threshold`` bytes
    go to ``<name>.data`` beside it at 4096-aligned offsets. Output files are written under
    temporary names and renamed at the end, so ``path`` may also be a source of the data,
    and on error nothing at ``path`` changes.

    Raises:
        ModelLoadError: an external payload is missing, unreadable or out of bounds.
        UnsafeExternalDataError: a location escapes ``base_dir``.
        UnsupportedModelError: a single-file model would exceed protobuf's 2 GiB limit.
    """
    dest = Path(path)
    plan = [
        (t, _region(t, base_dir, allow_absolute) if _is_external(t) else None)
        for t in model.graph.initializer
    ]
    # Copy everything but the initializers (cheap), and inline the rare external tensors
    # that live elsewhere (Constant attributes, sparse initializers, subgraphs).
    head, graph = ModelProto(), GraphProto()
    _copy_without(model, head, "graph")
    _copy_without(model.graph, graph, "initializer")
    for tensor in (*_iter_tensors(head), *_iter_tensors(graph)):
        if _is_external(tensor):
            _inline(tensor, base_dir, allow_absolute)
    headers = [_header(t).SerializeToString() if r else b"" for t, r in plan]
    sizes = [
        len(h) + _len_field_size(_RAW_DATA, r.length) if r else t.ByteSize()
        for (t, r), h in zip(plan, headers, strict=True)
    ]
    graph_bytes = graph.SerializeToString()
    graph_len = len(graph_bytes) + sum(_len_field_size(_GRAPH_INITIALIZER, s) for s in sizes)
    total = head.ByteSize() + _len_field_size(_MODEL_GRAPH, graph_len)
    if external_data is None:
        external_data = total >= _AUTO_EXTERNAL
    if not external_data and total >= _PROTOBUF_LIMIT:
        raise UnsupportedModelError(
            f"{dest}: {total} bytes exceeds protobuf's 2 GiB limit; save with external data"
        )
    staged, copier = _Staged(), _Copier()
    try:
        if external_data:
            _write_external(head, graph, plan, dest, staged, copier, size_threshold)
        else:
            with staged.open(dest) as out:
                # One graph field holding the graph minus initializers, then every
                # initializer spliced in as field 5 with its payload copied from disk.
                out.write(head.SerializeToString())
                out.write(_varint(_MODEL_GRAPH << 3 | _LEN) + _varint(graph_len) + graph_bytes)
                for (tensor, region), header, size in zip(plan, headers, sizes, strict=True):
                    out.write(_varint(_GRAPH_INITIALIZER << 3 | _LEN) + _varint(size))
                    if region is None:
                        out.write(tensor.SerializeToString())
                        continue
                    out.write(header + _varint(_RAW_DATA << 3 | _LEN) + _varint(region.length))
                    copier.copy(region, out)
                _finish(out)
        staged.commit()
    except BaseException:
        staged.discard()
        raise
    finally:
        copier.close()


def _write_external(
    head: ModelProto,
    graph: GraphProto,
    plan: list[tuple[TensorProto, _Region | None]],
    dest: Path,
    staged: _Staged,
    copier: _Copier,
    threshold: int,
) -> None:
    data_path = dest.with_name(dest.name + ".data")
    data: BinaryIO | None = None
    for tensor, region in plan:
        raw = tensor.raw_data if region is None and tensor.HasField("raw_data") else None
        length = region.length if region else -1 if raw is None else len(raw)
        if length <= threshold:  # small and typed-field tensors stay in the model file
            out_tensor = graph.initializer.add()
            if region is None:
                out_tensor.CopyFrom(tensor)
            else:
                out_tensor.CopyFrom(_header(tensor))
                out_tensor.raw_data = _read_region(region)
            continue
        if data is None:
            data = staged.open(data_path)
        offset = data.tell() + -data.tell() % _ALIGN
        data.write(b"\0" * (offset - data.tell()))
        if region is None:
            data.write(raw)  # type: ignore[arg-type]
        else:
            copier.copy(region, data)
        out_tensor = graph.initializer.add()
        out_tensor.CopyFrom(_header(tensor))
        out_tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", data_path.name), ("offset", offset), ("length", length)):
            entry = out_tensor.external_data.add()
            entry.key, entry.value = key, str(value)
    if data is not None:
        _finish(data)
    head.graph.CopyFrom(graph)
    try:
        body = head.SerializeToString()
    except ValueError as exc:  # the graph structure alone is over 2 GiB
        raise UnsupportedModelError(f"{dest}: model too large to serialize: {exc}") from None
    with staged.open(dest) as out:
        out.write(body)
        _finish(out)
