"""Constant tensors whose data loads lazily and that hash by content.

A model's weights are by far its largest part. :class:`TensorData` keeps only
a loader for them, so importing a 100 MB model does not copy 100 MB: the
bytes are read (memory-mapped where the file allows) when someone needs them,
and the content digest that makes constants hash-consable is computed once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from optimizer.ir.types import DType, TensorType, num_elements


class TensorData:
    """An immutable constant tensor: dtype, static shape and lazily loaded values.

    ``source`` is an opaque handle that the exporter may use to copy the bytes
    without decoding them (for example a region of the original file); the IR
    never interprets it. ``origin`` says where lazily loaded bytes live (a file's
    identity, or a token of one in-memory model): two tensors are equal only when
    their content *and* origin agree, so a constant is never exported from a file
    or proto other than the one it was read from. Data held in memory has no origin.
    """

    __slots__ = (
        "dtype",
        "shape",
        "_loader",
        "_array",
        "_digest",
        "source",
        "origin",
        "__weakref__",
    )

    def __init__(
        self,
        dtype: DType,
        shape: tuple[int, ...],
        loader: Callable[[], np.ndarray],
        *,
        source: Any = None,
        origin: Any = None,
        digest: bytes | None = None,
    ) -> None:
        self.dtype = dtype
        self.shape = tuple(int(d) for d in shape)
        self._loader = loader
        self._array: np.ndarray | None = None
        self._digest = digest
        self.source = source
        self.origin = origin

    @classmethod
    def from_array(cls, array: np.ndarray, dtype: DType | None = None) -> TensorData:
        """Wrap an in-memory array (copied, then made read-only, so nobody can mutate it)."""
        array = np.array(array, copy=True)
        array.flags.writeable = False
        kind = dtype if dtype is not None else DType.from_numpy(array.dtype)
        tensor = cls(kind, array.shape, lambda: array)
        tensor._array = array
        return tensor

    @property
    def type(self) -> TensorType:
        """The tensor's IR type."""
        return TensorType(self.dtype, self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return num_elements(self.shape) or 0

    @property
    def nbytes(self) -> int:
        """Bytes of data (approximate for strings)."""
        return int(self.size * (self.dtype.itemsize or 8))

    @property
    def is_loaded(self) -> bool:
        """Whether the values have been read into memory (or mapped) already."""
        return self._array is not None

    def numpy(self) -> np.ndarray:
        """The values as a read-only numpy array (loaded on first use and kept)."""
        if self._array is None:
            array = self._loader()
            if tuple(array.shape) != self.shape:
                array = array.reshape(self.shape)
            if array.flags.writeable:
                array.flags.writeable = False
            self._array = array
        return self._array

    def peek(self) -> np.ndarray:
        """The values without caching them (for one-off reads of large weights)."""
        return self._array if self._array is not None else self._loader().reshape(self.shape)

    @property
    def digest(self) -> bytes:
        """A content digest of dtype, shape and values; computed once."""
        if self._digest is None:
            h = hashlib.blake2b(digest_size=16)
            h.update(repr((int(self.dtype), self.shape)).encode())
            array = self.peek()
            if self.dtype == DType.STRING:
                for item in array.reshape(-1):
                    data = item if isinstance(item, bytes) else str(item).encode()
                    h.update(len(data).to_bytes(8, "little"))
                    h.update(data)
            else:
                h.update(np.ascontiguousarray(array).view(np.uint8).reshape(-1).data)
            self._digest = h.digest()
        return self._digest

    def __hash__(self) -> int:
        return hash((self.digest, self.origin))

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if not isinstance(other, TensorData):
            return NotImplemented
        return (
            self.dtype == other.dtype
            and self.shape == other.shape
            and self.origin == other.origin
            and self.digest == other.digest
        )

    def __repr__(self) -> str:
        return f"TensorData({self.type}, digest={self.digest.hex()[:8]})"
