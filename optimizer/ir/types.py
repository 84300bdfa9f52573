"""Element types, shapes with symbolic dimensions, and value types of the IR.

The IR never imports onnx: dtypes carry ONNX's numeric codes so that
``optimizer.onnx_io`` can translate without a table of its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class DType(enum.IntEnum):
    """Tensor element types, numbered as ONNX's ``TensorProto.DataType``."""

    UNDEFINED = 0
    FLOAT = 1
    UINT8 = 2
    INT8 = 3
    UINT16 = 4
    INT16 = 5
    INT32 = 6
    INT64 = 7
    STRING = 8
    BOOL = 9
    FLOAT16 = 10
    DOUBLE = 11
    UINT32 = 12
    UINT64 = 13
    COMPLEX64 = 14
    COMPLEX128 = 15
    BFLOAT16 = 16
    FLOAT8E4M3FN = 17
    FLOAT8E4M3FNUZ = 18
    FLOAT8E5M2 = 19
    FLOAT8E5M2FNUZ = 20
    UINT4 = 21
    INT4 = 22
    FLOAT4E2M1 = 23
    FLOAT8E8M0 = 24
    UINT2 = 25
    INT2 = 26

    @property
    def is_float(self) -> bool:
        """True for every floating-point type (including the 8- and 4-bit ones)."""
        return self in _FLOAT_TYPES

    @property
    def is_integer(self) -> bool:
        """True for signed and unsigned integer types (not bool)."""
        return self in _INTEGER_TYPES

    @property
    def itemsize(self) -> float:
        """Bytes per element; fractional for sub-byte types, 0 for strings and UNDEFINED."""
        return _ITEMSIZE.get(self, 0)

    def to_numpy(self) -> np.dtype:
        """The numpy dtype holding this type's values (ml_dtypes for bfloat16 and float8)."""
        if self in _NUMPY:
            return np.dtype(_NUMPY[self])
        import ml_dtypes  # onnx depends on it, so it is always installed

        name = {
            DType.BFLOAT16: "bfloat16",
            DType.FLOAT8E4M3FN: "float8_e4m3fn",
            DType.FLOAT8E4M3FNUZ: "float8_e4m3fnuz",
            DType.FLOAT8E5M2: "float8_e5m2",
            DType.FLOAT8E5M2FNUZ: "float8_e5m2fnuz",
            DType.UINT4: "uint4",
            DType.INT4: "int4",
            DType.FLOAT4E2M1: "float4_e2m1fn",
            DType.FLOAT8E8M0: "float8_e8m0fnu",
            DType.UINT2: "uint2",
            DType.INT2: "int2",
        }.get(self)
        if name is None or not hasattr(ml_dtypes, name):
            raise TypeError(f"no numpy dtype for {self.name}")
        return np.dtype(getattr(ml_dtypes, name))

    @classmethod
    def from_numpy(cls, dtype: np.dtype | type) -> DType:
        """The DType of a numpy dtype."""
        dtype = np.dtype(dtype)
        for code, name in _NUMPY.items():
            if np.dtype(name) == dtype:
                return code
        if dtype.kind in ("U", "S", "O"):
            return DType.STRING
        for code in DType:  # the ml_dtypes types (bfloat16, float8, 4- and 2-bit)
            if code in _NUMPY or code == DType.UNDEFINED:
                continue
            try:
                if code.to_numpy() == dtype:
                    return code
            except TypeError:
                continue
        raise TypeError(f"no DType for numpy dtype {dtype}")


_NUMPY = {
    DType.FLOAT: "float32",
    DType.UINT8: "uint8",
    DType.INT8: "int8",
    DType.UINT16: "uint16",
    DType.INT16: "int16",
    DType.INT32: "int32",
    DType.INT64: "int64",
    DType.STRING: "object",
    DType.BOOL: "bool",
    DType.FLOAT16: "float16",
    DType.DOUBLE: "float64",
    DType.UINT32: "uint32",
    DType.UINT64: "uint64",
    DType.COMPLEX64: "complex64",
    DType.COMPLEX128: "complex128",
}
_FLOAT_TYPES = frozenset(
    {
        DType.FLOAT,
        DType.FLOAT16,
        DType.DOUBLE,
        DType.BFLOAT16,
        DType.FLOAT8E4M3FN,
        DType.FLOAT8E4M3FNUZ,
        DType.FLOAT8E5M2,
        DType.FLOAT8E5M2FNUZ,
        DType.FLOAT4E2M1,
        DType.FLOAT8E8M0,
    }
)
_INTEGER_TYPES = frozenset(
    {
        DType.UINT8,
        DType.INT8,
        DType.UINT16,
        DType.INT16,
        DType.INT32,
        DType.INT64,
        DType.UINT32,
        DType.UINT64,
        DType.UINT4,
        DType.INT4,
        DType.UINT2,
        DType.INT2,
    }
)
_ITEMSIZE: dict[DType, float] = {
    DType.FLOAT: 4,
    DType.UINT8: 1,
    DType.INT8: 1,
    DType.UINT16: 2,
    DType.INT16: 2,
    DType.INT32: 4,
    DType.INT64: 8,
    DType.BOOL: 1,
    DType.FLOAT16: 2,
    DType.DOUBLE: 8,
    DType.UINT32: 4,
    DType.UINT64: 8,
    DType.COMPLEX64: 8,
    DType.COMPLEX128: 16,
    DType.BFLOAT16: 2,
    DType.FLOAT8E4M3FN: 1,
    DType.FLOAT8E4M3FNUZ: 1,
    DType.FLOAT8E5M2: 1,
    DType.FLOAT8E5M2FNUZ: 1,
    DType.UINT4: 0.5,
    DType.INT4: 0.5,
    DType.FLOAT4E2M1: 0.5,
    DType.FLOAT8E8M0: 1,
    DType.UINT2: 0.25,
    DType.INT2: 0.25,
}

#: A dimension: a known size, a named symbol (ONNX ``dim_param``), or unknown (``None``).
Dim = int | str | None
#: A shape: a tuple of dims, or ``None`` when even the rank is unknown.
Shape = tuple[Dim, ...] | None


def is_static(shape: Shape) -> bool:
    """True when the rank and every dimension are known integers."""
    return shape is not None and all(isinstance(d, int) for d in shape)


def num_elements(shape: Shape) -> int | None:
    """The element count of a static shape, else None."""
    if not is_static(shape):
        return None
    count = 1
    for d in shape:  # type: ignore[union-attr]
        count *= d  # type: ignore[operator]
    return count


def dims_compatible(a: Dim, b: Dim) -> bool:
    """False only when both dims are known and provably different."""
    if a is None or b is None or isinstance(a, str) or isinstance(b, str):
        return True
    return a == b


@dataclass(frozen=True)
class TensorType:
    """The type of a tensor value: element type and (possibly partial) shape."""

    dtype: DType
    shape: Shape = None

    @property
    def rank(self) -> int | None:
        """Number of dimensions, or None when unknown."""
        return None if self.shape is None else len(self.shape)

    def compatible_with(self, other: ValueType) -> bool:
        """True unless the two types provably disagree (dtype, rank or a known dim)."""
        if not isinstance(other, TensorType):
            return False
        if DType.UNDEFINED not in (self.dtype, other.dtype) and self.dtype != other.dtype:
            return False
        if self.shape is None or other.shape is None:
            return True
        if len(self.shape) != len(other.shape):
            return False
        return all(dims_compatible(a, b) for a, b in zip(self.shape, other.shape))

    def __str__(self) -> str:
        dims = (
            "?"
            if self.shape is None
            else ",".join("?" if d is None else str(d) for d in self.shape)
        )
        return f"{self.dtype.name.lower()}[{dims}]"


@dataclass(frozen=True)
class OpaqueType:
    """A non-tensor type (sequence, map, optional, sparse tensor) kept in its serialized form."""

    encoded: bytes

    def compatible_with(self, other: ValueType) -> bool:
        """Opaque types only agree with themselves."""
        return other == self

    def __str__(self) -> str:
        return "opaque"


ValueType = TensorType | OpaqueType

#: The type of a value about which nothing is known.
UNKNOWN = TensorType(DType.UNDEFINED, None)
