"""Datasets read in chunks: arrays, ``.npy``/``.npz`` files, CSV files, image folders, iterables.

Every reader yields :class:`Chunk`\\ s of at most ``size`` rows and never holds more than one
chunk of the source in memory (``.npy`` files are memory-mapped, ``.npz`` members and CSV files
are read sequentially, images one by one), so datasets larger than memory stream through.
:func:`open_dataset` picks the reader from the source's type or file extension.

Labels travel as read (integers or names); :func:`encode_labels` turns them into class indices
against a class set and refuses labels outside it.
"""

from __future__ import annotations

import csv
import math
import os
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optimizer.label.exceptions import LabelDataError

#: Rows per chunk when the caller does not say.
DEFAULT_CHUNK_ROWS = 4096
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
_FEATURE_KEYS = ("x", "X", "data", "features", "inputs")
_LABEL_KEYS = ("y", "Y", "labels", "label", "targets", "target")


@dataclass(frozen=True)
class Chunk:
    """Consecutive rows of a dataset: their ids, inputs and (when known) given labels."""

    ids: np.ndarray
    x: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


class Dataset:
    """Rows read in chunks. Subclasses implement :meth:`chunks`; ``len()`` may be unknown.

    ``sample_shape`` is the shape of one row's input, or None until the data says.
    ``has_labels`` tells whether chunks carry given labels.
    """

    name: str = "dataset"
    has_labels: bool = False

    def num_rows(self) -> int | None:
        """Number of rows, or None when only reading them all would tell."""
        return None

    def chunks(self, size: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        """Yield the rows in order, at most ``size`` at a time."""
        raise NotImplementedError

    def adapt(self, sample_shape: Sequence[int | str | None]) -> None:
        """Learn the input shape a model expects (image readers resize to it); default: no-op."""

    def labels(self) -> np.ndarray | None:
        """Every given label (read through the data once when they are not held apart)."""
        if not self.has_labels:
            return None
        parts = [c.labels for c in self.chunks() if c.labels is not None]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def _check_size(size: int) -> int:
    if int(size) < 1:
        raise LabelDataError(f"chunk size must be at least 1, got {size}")
    return int(size)


class ArrayDataset(Dataset):
    """An in-memory or memory-mapped array (rows along axis 0), with optional labels and ids."""

    def __init__(
        self,
        x: Any,
        labels: Sequence[Any] | np.ndarray | None = None,
        ids: Sequence[Any] | np.ndarray | None = None,
        *,
        name: str = "array",
    ) -> None:
        self.x = x if isinstance(x, np.ndarray) else np.asarray(x)
        self.name = name
        if self.x.ndim == 0:
            raise LabelDataError(f"{name}: expected rows along axis 0, got a scalar")
        n = len(self.x)
        self._labels = None if labels is None else np.asarray(labels)
        self.has_labels = self._labels is not None
        if self._labels is not None and len(self._labels) != n:
            raise LabelDataError(f"{name}: {len(self._labels)} labels for {n} rows")
        self._ids = None if ids is None else np.asarray(ids)
        if self._ids is not None and len(self._ids) != n:
            raise LabelDataError(f"{name}: {len(self._ids)} ids for {n} rows")

    def num_rows(self) -> int:
        return len(self.x)

    def labels(self) -> np.ndarray | None:
        return self._labels

    def chunks(self, size: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        size = _check_size(size)
        for start in range(0, len(self.x), size):
            stop = min(start + size, len(self.x))
            ids = np.arange(start, stop) if self._ids is None else self._ids[start:stop]
            labels = None if self._labels is None else self._labels[start:stop]
            # np.asarray reads a memory-mapped slice into memory: one chunk at a time.
            yield Chunk(ids, np.asarray(self.x[start:stop]), labels)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise LabelDataError(f"{path}: not a readable .npy array ({exc})") from exc


class NpzDataset(Dataset):
    """One array of an ``.npz`` archive, decompressed and read sequentially chunk by chunk.

    ``key`` names the feature array (default: the only array, or one called x/X/data/features/
    inputs); ``label_key`` an array of labels (default: y/Y/labels/label/targets/target when
    present; pass ``label_key=""`` for none).
    """

    def __init__(
        self, path: str | os.PathLike, key: str | None = None, label_key: str | None = None
    ):
        self.path = Path(path)
        self.name = str(path)
        try:
            with zipfile.ZipFile(self.path) as zf:
                members = [n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy")]
        except (zipfile.BadZipFile, OSError) as exc:
            raise LabelDataError(f"{path}: not a readable .npz archive ({exc})") from exc
        if not members:
            raise LabelDataError(f"{path}: the archive holds no arrays")
        self.key = key if key is not None else self._default_key(members)
        if self.key not in members:
            raise LabelDataError(
                f"{path}: no array {self.key!r} (arrays: {', '.join(sorted(members))})"
            )
        if label_key is None:
            label_key = next((k for k in _LABEL_KEYS if k in members and k != self.key), "")
        if label_key and label_key not in members:
            raise LabelDataError(
                f"{path}: no label array {label_key!r} (arrays: {', '.join(sorted(members))})"
            )
        self.label_key = label_key or None
        self.has_labels = self.label_key is not None
        self._label_array: np.ndarray | None = None
        with self._open() as (_, shape, _fortran, _dtype):
            self.shape = shape
        if len(self.shape) == 0:
            raise LabelDataError(f"{path}: array {self.key!r} is a scalar, expected rows")

    def _default_key(self, members: list[str]) -> str:
        if len(members) == 1:
            return members[0]
        for k in _FEATURE_KEYS:
            if k in members:
                return k
        raise LabelDataError(
            f"{self.path}: several arrays ({', '.join(sorted(members))}); say which holds the "
            "inputs"
        )

    class _Member:
        def __init__(self, path: Path, key: str) -> None:
            self.path, self.key = path, key

        def __enter__(self):
            self.zf = zipfile.ZipFile(self.path)
            self.f = self.zf.open(self.key + ".npy")
            try:
                version = np.lib.format.read_magic(self.f)
                header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = header(self.f)
            except ValueError as exc:
                self.__exit__()
                raise LabelDataError(
                    f"{self.path}: array {self.key!r} is malformed ({exc})"
                ) from exc
            if dtype.hasobject:
                self.__exit__()
                raise LabelDataError(f"{self.path}: array {self.key!r} holds Python objects")
            return self.f, tuple(shape), fortran, dtype

        def __exit__(self, *exc: object) -> None:
            self.f.close()
            self.zf.close()

    def _open(self):
        return self._Member(self.path, self.key)

    def num_rows(self) -> int:
        return int(self.shape[0])

    def labels(self) -> np.ndarray | None:
        if self.label_key is None:
            return None
        if self._label_array is None:
            with np.load(self.path, allow_pickle=False) as archive:
                labels = archive[self.label_key]
            if labels.ndim != 1 or len(labels) != self.num_rows():
                raise LabelDataError(
                    f"{self.path}: label array {self.label_key!r} has shape {labels.shape}, "
                    f"expected ({self.num_rows()},)"
                )
            self._label_array = labels
        return self._label_array

    def chunks(self, size: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        size = _check_size(size)
        labels = self.labels()
        with self._open() as (f, shape, fortran, dtype):
            if fortran and len(shape) > 1:
                # Column-major data cannot be read row by row: load this one array whole.
                with np.load(self.path, allow_pickle=False) as archive:
                    array = archive[self.key]
                yield from ArrayDataset(array, labels).chunks(size)
                return
            row = math.prod(shape[1:]) * dtype.itemsize
            for start in range(0, shape[0], size):
                n = min(size, shape[0] - start)
                raw = f.read(n * row)
                if len(raw) != n * row:
                    raise LabelDataError(f"{self.path}: array {self.key!r} is truncated")
                x = np.frombuffer(raw, dtype=dtype).reshape((n, *shape[1:]))
                ids = np.arange(start, start + n)
                yield Chunk(ids, x, None if labels is None else labels[start : start + n])


def _parse_float(cell: str, path: Path, line: int, column: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise LabelDataError(
            f"{path}:{line}: column {column!r} holds {cell!r}, not a number"
        ) from None


class CsvDataset(Dataset):
    """Feature rows of a CSV file with a header line, read sequentially.

    ``columns`` names the feature columns (default: every column except the label and id
    columns); ``label_column`` and ``id_column`` are optional. Missing columns and non-numeric
    features are errors that name the line.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        columns: Sequence[str] | None = None,
        label_column: str | None = None,
        id_column: str | None = None,
        *,
        delimiter: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.delimiter = delimiter or ("\t" if self.path.suffix.lower() == ".tsv" else ",")
        header = self._header()
        missing = [
            c
            for c in [*(columns or ()), label_column, id_column]
            if c is not None and c not in header
        ]
        if missing:
            raise LabelDataError(
                f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} "
                f"(columns: {', '.join(header)})"
            )
        special = {label_column, id_column}
        self.columns = list(columns) if columns else [c for c in header if c not in special]
        if not self.columns:
            raise LabelDataError(f"{path}: no feature columns")
        self._index = [header.index(c) for c in self.columns]
        self._label = header.index(label_column) if label_column else None
        self._id = header.index(id_column) if id_column else None
        self.label_column = label_column
        self.has_labels = label_column is not None
        self._width = len(header)

    def _header(self) -> list[str]:
        try:
            with open(self.path, newline="", encoding="utf-8") as f:
                header = next(csv.reader(f, delimiter=self.delimiter), None)
        except (OSError, UnicodeDecodeError) as exc:
            raise LabelDataError(f"{self.path}: cannot read ({exc})") from exc
        if not header:
            raise LabelDataError(f"{self.path}: empty file (expected a header line)")
        return [h.strip() for h in header]

    def chunks(self, size: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        size = _check_size(size)
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter=self.delimiter)
            next(reader)
            rows: list[list[str]] = []
            start = 0
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue  # blank lines
                if len(row) != self._width:
                    raise LabelDataError(
                        f"{self.path}:{line}: {len(row)} fields, the header has {self._width}"
                    )
                rows.append([line, *row])  # type: ignore[list-item]
                if len(rows) == size:
                    yield self._chunk(rows, start)
                    start += len(rows)
                    rows = []
            if rows:
                yield self._chunk(rows, start)

    def _chunk(self, rows: list[list], start: int) -> Chunk:
        try:
            x = np.array([[row[i + 1] for i in self._index] for row in rows], dtype=np.float32)
        except ValueError:
            for row in rows:  # find the culprit for the message
                for i, col in zip(self._index, self.columns):
                    _parse_float(row[i + 1], self.path, row[0], col)
            raise
        ids = (
            np.arange(start, start + len(rows))
            if self._id is None
            else np.array([row[self._id + 1] for row in rows])
        )
        labels = None
        if self._label is not None:
            labels = np.array([row[self._label + 1].strip() for row in rows])
        return Chunk(ids, x, labels)


class ImageFolderDataset(Dataset):
    """Image files under a folder (recursively, sorted by path), read one at a time.

    Images in subfolders take the subfolder's name as their given label (torchvision's
    ImageFolder layout); ids are paths relative to the folder. Images are resized to the
    model's input size and scaled to [0, 1] (``scale``), then normalised by ``mean``/``std``
    per channel when given; the layout (NCHW or NHWC) and the channel count (1: grayscale,
    3: RGB) follow the model's input shape (see :meth:`adapt`). Needs Pillow.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        size: tuple[int, int] | None = None,
        channels: int | None = None,
        layout: str | None = None,
        scale: float = 1 / 255,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = str(path)
        if not self.path.is_dir():
            raise LabelDataError(f"{path}: not a folder")
        self.files = sorted(
            p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        self.has_labels = bool(self.files) and all(p.parent != self.path for p in self.files)
        self.size, self.channels, self.layout = size, channels, layout
        self.scale = scale
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.std = None if std is None else np.asarray(std, dtype=np.float32)
        if layout not in (None, "NCHW", "NHWC"):
            raise LabelDataError(f"image layout must be NCHW or NHWC, got {layout!r}")

    def num_rows(self) -> int:
        return len(self.files)

    def labels(self) -> np.ndarray | None:
        if not self.has_labels:
            return None
        return np.array([p.parent.relative_to(self.path).as_posix() for p in self.files])

    def adapt(self, sample_shape: Sequence[int | str | None]) -> None:
        shape = list(sample_shape)
        if len(shape) != 3:
            raise LabelDataError(
                f"{self.name}: images need a model input of rank 4 (N,C,H,W or N,H,W,C); "
                f"the model takes rows of shape {tuple(shape)}"
            )
        if self.layout is None:
            self.layout = "NHWC" if shape[-1] in (1, 3) and shape[0] not in (1, 3) else "NCHW"
        c, h, w = shape if self.layout == "NCHW" else (shape[2], shape[0], shape[1])
        if self.channels is None:
            self.channels = c if isinstance(c, int) else 3
        if self.size is None:
            if not (isinstance(h, int) and isinstance(w, int)):
                raise LabelDataError(
                    f"{self.name}: the model's image size is dynamic; give the size to resize to"
                )
            self.size = (h, w)

    def _read(self, path: Path) -> np.ndarray:
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise LabelDataError("reading images needs Pillow: pip install pillow") from exc
        try:
            with Image.open(path) as img:
                img = img.convert("L" if self.channels == 1 else "RGB")
                if self.size is not None:
                    img = img.resize((self.size[1], self.size[0]), Image.BILINEAR)
                arr = np.asarray(img, dtype=np.float32) * self.scale
        except (UnidentifiedImageError, OSError) as exc:
            raise LabelDataError(f"{path}: not a readable image ({exc})") from exc
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if self.mean is not None:
            arr = arr - self.mean
        if self.std is not None:
            arr = arr / self.std
        return arr if self.layout == "NHWC" else arr.transpose(2, 0, 1)

    def chunks(self, size: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        size = _check_size(size)
        labels = self.labels()
        if self.layout is None:
            self.layout = "NCHW"
        for start in range(0, len(self.files), size):
            files = self.files[start : start + size]
            images = [self._read(p) for p in files]
            shapes = {a.shape for a in images}
            if len(shapes) > 1:
                raise LabelDataError(
                    f"{self.name}: images differ in size ({sorted(shapes)[:2]}); give a size"
                )
            ids = np.array([p.relative_to(self.path).as_posix() for p in files])
            chunk_labels = None if labels is None else labels[start : start + size]
            yield Chunk(ids, np.stack(images), chunk_labels)


class IterableDataset(Dataset):
    """Rows from any Python iterable: each item is one input array, or an ``(input, label)``
    pair. The iterable is consumed once per pass; pass a re-iterable (a list, a generator
    factory wrapped in a class) when it must be read twice."""

    def __init__(self, items: Iterable[Any], *, name: str = "iterable") -> None:
        self.items = items
        self.name = name
        self.has_labels = False  # known once the first item is seen
        self._count: int | None = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]

    def num_rows(self) -> int | None:
        return self._count

    def labels(self) -> np.ndarray | None:
        parts = [c.labels for c in self.chunks() if c.labels is not None]
        return np.concatenate(parts) if parts else None

    def chunks(self, size: int = DEFAULT_CHUNK_ROWS) -> Iterator[Chunk]:
        size = _check_size(size)
        xs: list[np.ndarray] = []
        ys: list[Any] = []
        paired: bool | None = None
        start = 0
        for k, item in enumerate(self.items):
            is_pair = isinstance(item, tuple) and len(item) == 2
            if paired is None:
                paired = is_pair
                self.has_labels = is_pair
            elif paired != is_pair:
                raise LabelDataError(
                    f"{self.name}: item {k} is {'a pair' if is_pair else 'not a pair'}, unlike "
                    "the first item: give every item as an array or every item as (input, label)"
                )
            x = np.asarray(item[0] if is_pair else item)
            if xs and x.shape != xs[0].shape:
                raise LabelDataError(
                    f"{self.name}: item {k} has shape {x.shape}, item {start} {xs[0].shape}"
                )
            xs.append(x)
            if is_pair:
                ys.append(item[1])
            if len(xs) == size:
                yield Chunk(
                    np.arange(start, start + size), np.stack(xs), np.asarray(ys) if paired else None
                )
                start += size
                xs, ys = [], []
        if xs:
            labels = np.asarray(ys) if paired else None
            yield Chunk(np.arange(start, start + len(xs)), np.stack(xs), labels)


def open_dataset(
    source: Any,
    *,
    labels: Sequence[Any] | np.ndarray | str | os.PathLike | None = None,
    key: str | None = None,
    label_key: str | None = None,
    columns: Sequence[str] | None = None,
    label_column: str | None = None,
    id_column: str | None = None,
    image_size: tuple[int, int] | None = None,
) -> Dataset:
    """The dataset ``source`` describes.

    - a :class:`Dataset`: itself;
    - a numpy array: its rows;
    - a path to ``.npy`` (memory-mapped), ``.npz`` (``key``/``label_key``), ``.csv``/``.tsv``
      (``columns``, ``label_column``, ``id_column``) or a folder of images (``image_size``);
    - any other iterable: its items (arrays, or ``(input, label)`` pairs).

    ``labels`` gives the given labels apart from the inputs (an array, or a ``.npy``/``.csv``/
    ``.txt`` file, see :func:`read_labels`) for sources that hold none.
    """
    if isinstance(source, Dataset):
        dataset = source
    elif isinstance(source, np.ndarray):
        dataset = ArrayDataset(source)
    elif isinstance(source, (str, os.PathLike)):
        dataset = _open_path(
            Path(source), key, label_key, columns, label_column, id_column, image_size
        )
    elif isinstance(source, Iterable):
        dataset = IterableDataset(source)
    else:
        raise LabelDataError(f"cannot read a dataset from a {type(source).__name__}")
    if labels is not None:
        if isinstance(labels, (str, os.PathLike)):
            labels = read_labels(labels)
        if not isinstance(dataset, ArrayDataset):
            raise LabelDataError(
                "separate labels go with array data (.npy or arrays); other sources carry their "
                "labels (a label column, an npz label array, image subfolders)"
            )
        dataset = ArrayDataset(dataset.x, labels, dataset._ids, name=dataset.name)
    return dataset


def _open_path(path: Path, key, label_key, columns, label_column, id_column, image_size) -> Dataset:
    if not path.exists():
        raise LabelDataError(f"{path}: no such file or folder")
    if path.is_dir():
        return ImageFolderDataset(path, size=image_size)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return ArrayDataset(_load_npy(path), name=str(path))
    if suffix == ".npz":
        return NpzDataset(path, key, label_key)
    if suffix in (".csv", ".tsv"):
        return CsvDataset(path, columns, label_column, id_column)
    raise LabelDataError(
        f"{path}: unsupported dataset format {suffix or '(no extension)'!r} "
        "(expected .npy, .npz, .csv, .tsv or a folder of images)"
    )


def read_labels(path: str | os.PathLike, column: str | None = None) -> np.ndarray:
    """Labels from a ``.npy`` array, a CSV file (``column``, default: the only or the last
    column) or a text file with one label per line."""
    path = Path(path)
    if not path.is_file():
        raise LabelDataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        labels = np.asarray(_load_npy(path))
        if labels.ndim != 1:
            raise LabelDataError(f"{path}: labels must be one-dimensional, got {labels.shape}")
        return labels
    if suffix in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f, delimiter="\t" if suffix == ".tsv" else ",")
            header = next(reader, None)
            if not header:
                raise LabelDataError(f"{path}: empty file (expected a header line)")
            name = column or header[-1]
            if name not in header:
                raise LabelDataError(
                    f"{path}: missing column {name!r} (columns: {', '.join(header)})"
                )
            i = header.index(name)
            return np.array([row[i].strip() for row in reader if row])
    with open(path, encoding="utf-8") as f:
        return np.array([line.strip() for line in f if line.strip()])


def encode_labels(
    raw: Sequence[Any] | np.ndarray, num_classes: int, class_names: Sequence[str] | None = None
) -> np.ndarray:
    """Class indices (int64) of the given labels.

    Integer labels must lie in ``[0, num_classes)``. Names are looked up in ``class_names``;
    without class names, names that are integers (``"3"``) count as indices. Any label outside
    the class set raises :class:`LabelDataError` naming it.
    """
    raw = np.asarray(raw)
    if raw.ndim != 1:
        raise LabelDataError(f"labels must be one-dimensional, got shape {raw.shape}")
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw) & (np.mod(raw, 1) == 0)):
        raise LabelDataError("labels must be class indices or names, got fractional numbers")
    if raw.dtype.kind in "iufb":
        indices = raw.astype(np.int64)
    elif class_names is not None:
        lookup = {str(name): k for k, name in enumerate(class_names)}
        unknown = sorted({str(v) for v in raw if str(v) not in lookup})
        if unknown:
            shown = ", ".join(map(str, class_names[:12]))
            shown += " ..." if len(class_names) > 12 else ""
            more = f" ({len(unknown)} unknown labels)" if len(unknown) > 1 else ""
            raise LabelDataError(f"label {unknown[0]!r} is not in the class set ({shown}){more}")
        return np.array([lookup[str(v)] for v in raw], dtype=np.int64)
    else:
        try:
            indices = np.array([int(str(v)) for v in raw], dtype=np.int64)
        except ValueError:
            bad = next(v for v in raw if not str(v).lstrip("-").isdigit())
            raise LabelDataError(
                f"label {str(bad)!r} is a name, not a class index: give the class names"
            ) from None
    outside = (indices < 0) | (indices >= num_classes)
    if outside.any():
        bad = int(indices[np.argmax(outside)])
        raise LabelDataError(
            f"label {bad} is outside the class set 0..{num_classes - 1} "
            f"({int(outside.sum())} label(s) outside)"
        )
    return indices
