"""What a VJP rule builds with: :class:`VJPContext`, typed node construction and the
opset-appropriate form of each helper (``ReduceSum`` axes as an input from opset 13,
``Unsqueeze`` axes as an input from 13, ...), plus undoing broadcasting statically where the
shapes say enough and with runtime shape arithmetic where they are symbolic."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from optimizer import onnx_io  # noqa: F401 - installs ONNX type inference on the registry
from optimizer.explain.errors import AutodiffError
from optimizer.ir import (
    REGISTRY,
    UNKNOWN,
    DType,
    Node,
    TensorData,
    TensorType,
    Value,
    constant,
)


def is_float(value: Value | None) -> bool:
    """Whether ``value`` is a floating-point tensor (the values gradients flow through)."""
    return (
        value is not None
        and isinstance(value.type, TensorType)
        and value.type.dtype in (DType.FLOAT, DType.DOUBLE, DType.FLOAT16, DType.BFLOAT16)
    )


class VJPContext:
    """What a VJP rule builds with: typed node construction and opset-aware helpers.

    Every helper returns an IR :class:`Value`; output types come from the op registry (the
    hand-written type functions, then ONNX's shape inference) unless the caller knows them.
    """

    def __init__(self, opset: int, names: Mapping[Value, str]) -> None:
        self.opset = opset
        self._names = names
        #: Zero-padded cotangents: padded value -> (unpadded value, begin, end).
        self._padded: dict[Value, tuple[Value, list[int], list[int]]] = {}

    # -- errors -------------------------------------------------------------------------------

    def label(self, node: Node) -> str:
        """How messages name a node: its op and its first output's name."""
        name = self._names.get(node.outputs[0]) if node.outputs else None
        return f"{node.op} node {name!r}" if name else f"{node.op} node"

    def fail(self, node: Node, why: str) -> AutodiffError:
        """An :class:`AutodiffError` about ``node`` (raise it)."""
        return AutodiffError(f"cannot differentiate {self.label(node)}: {why}")

    # -- node construction --------------------------------------------------------------------

    def emit(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: Mapping[str, Any] | None = None,
        *,
        outputs: int = 1,
        type: TensorType | None = None,
    ) -> Value:
        """Build one node and return its first output (``node_outputs`` for all of them).

        ``type`` fixes the first output's type (used where the shape is known from the primal
        but not inferable, e.g. a Reshape to a runtime shape).
        """
        return self.node_outputs(op, inputs, attrs, outputs=outputs, type=type)[0]

    def node_outputs(
        self,
        op: str,
        inputs: Sequence[Value | None],
        attrs: Mapping[str, Any] | None = None,
        *,
        outputs: int = 1,
        type: TensorType | None = None,
    ) -> tuple[Value, ...]:
        """Build one node; all of its outputs."""
        attrs = dict(attrs or {})
        if type is not None and outputs == 1:
            types: list = [type]
        else:
            probe = Node.make(op, inputs, attrs, output_types=[UNKNOWN] * outputs)
            try:
                inferred = REGISTRY.infer(probe, self.opset)
            except Exception:  # noqa: BLE001 - unknown shapes are fine; ORT infers them again
                inferred = None
            if not inferred or len(inferred) < outputs:
                dtype = next((v.type.dtype for v in inputs if is_float(v)), DType.UNDEFINED)
                inferred = [TensorType(dtype, None)] * outputs
            types = list(inferred[:outputs])
            if type is not None:
                types[0] = type
        return Node.make(op, inputs, attrs, output_types=types).outputs

    def const(self, array: np.ndarray) -> Value:
        """A constant tensor."""
        return constant(TensorData.from_array(np.asarray(array)))

    def scalar(self, x: float, like: Value) -> Value:
        """A 0-d constant with ``like``'s element type."""
        return self.const(np.array(x, dtype=like.type.dtype.to_numpy()))

    def ints(self, values: Iterable[int]) -> Value:
        """A 1-D int64 constant."""
        return self.const(np.array(list(values), dtype=np.int64))

    # -- shapes -------------------------------------------------------------------------------

    @staticmethod
    def shape_of(value: Value) -> tuple | None:
        """The IR shape of ``value`` (dims are ints, symbols or None), or None if unranked."""
        return value.type.shape if isinstance(value.type, TensorType) else None

    @staticmethod
    def static_shape(value: Value) -> tuple[int, ...] | None:
        """The shape when every dim is a known int, else None."""
        shape = VJPContext.shape_of(value)
        if shape is None or not all(isinstance(d, int) for d in shape):
            return None
        return tuple(shape)  # type: ignore[arg-type]

    def rank(self, value: Value, node: Node) -> int:
        """The rank of ``value`` (a rule needs it); raises naming ``node`` when unknown."""
        shape = self.shape_of(value)
        if shape is None:
            raise self.fail(node, "an input has unknown rank (give the model's input shapes)")
        return len(shape)

    def shape(self, value: Value) -> Value:
        """``Shape(value)``: its runtime shape."""
        rank = self.shape_of(value)
        out = TensorType(DType.INT64, (len(rank),) if rank is not None else (None,))
        return self.emit("Shape", [value], type=out)

    def like(self, g: Value, primal: Value) -> TensorType:
        """The type of a cotangent of ``primal`` whose element type is ``g``'s."""
        shape = self.shape_of(primal)
        return TensorType(g.type.dtype, shape)

    # -- arithmetic ---------------------------------------------------------------------------

    def add(self, a: Value, b: Value) -> Value:
        """a + b."""
        return self.emit("Add", [a, b])

    def sub(self, a: Value, b: Value) -> Value:
        """a - b."""
        return self.emit("Sub", [a, b])

    def mul(self, a: Value, b: Value) -> Value:
        """a * b."""
        return self.emit("Mul", [a, b])

    def div(self, a: Value, b: Value) -> Value:
        """a / b."""
        return self.emit("Div", [a, b])

    def neg(self, a: Value) -> Value:
        """-a."""
        return self.emit("Neg", [a])

    def where(self, cond: Value, a: Value, b: Value) -> Value:
        """Where(cond, a, b)."""
        return self.emit("Where", [cond, a, b])

    def sum(self, values: Sequence[Value]) -> Value:
        """The sum of same-shaped values (one Add, or one Sum for more than two).

        Zero-padded pieces that tile one axis exactly (the cotangents of q, k and v gathered
        from one tensor, of the parts of a Split done by Slices) are concatenated instead.
        """
        if len(values) == 1:
            return values[0]
        tiled = self._concat_tiles(values)
        if tiled is not None:
            return tiled
        if len(values) == 2:
            return self.add(values[0], values[1])
        return self.emit("Sum", list(values), type=values[0].type)

    def pad(
        self, x: Value, begin: list[int], end: list[int], type: TensorType | None = None
    ) -> Value:
        """``x`` with zeros added before (``begin``) and after (``end``) each axis."""
        if not any(begin) and not any(end):
            return x
        if self.opset < 11:
            out = self.emit("Pad", [x], {"pads": begin + end}, type=type)
        else:
            out = self.emit("Pad", [x, self.ints(begin + end)], type=type)
        self._padded[out] = (x, list(begin), list(end))
        return out

    def _concat_tiles(self, values: Sequence[Value]) -> Value | None:
        pieces = [self._padded.get(v) for v in values]
        if any(p is None for p in pieces):
            return None
        axes = {
            i
            for _, begin, end in pieces
            for i in range(len(begin))
            if begin[i] or end[i]  # type: ignore[misc]
        }
        if len(axes) != 1:
            return None
        (axis,) = axes
        dims = [self.shape_of(x) for x, _, _ in pieces]  # type: ignore[misc]
        if any(d is None or not isinstance(d[axis], int) for d in dims):
            return None
        spans = sorted(
            (begin[axis], begin[axis] + d[axis], x)  # type: ignore[index]
            for (x, begin, _), d in zip(pieces, dims)  # type: ignore[misc]
        )
        full = self.shape_of(values[0])
        if full is None or spans[0][0] != 0 or spans[-1][1] != full[axis]:
            return None
        if any(a[1] != b[0] for a, b in zip(spans, spans[1:])):
            return None
        return self.emit("Concat", [x for _, _, x in spans], {"axis": axis}, type=values[0].type)

    # -- opset-dependent forms ----------------------------------------------------------------

    def _axes_form(self, op: str, x: Value, axes: Sequence[int], attrs: dict, since: int) -> Value:
        if self.opset >= since:
            return self.emit(op, [x, self.ints(axes)], attrs)
        return self.emit(op, [x], {**attrs, "axes": list(axes)})

    def reduce_sum(self, x: Value, axes: Sequence[int], keepdims: bool = True) -> Value:
        """ReduceSum over ``axes`` (axes as an input from opset 13, an attribute before)."""
        if not axes:
            return x
        return self._axes_form("ReduceSum", x, axes, {"keepdims": int(keepdims)}, 13)

    def reduce_mean(self, x: Value, axes: Sequence[int], keepdims: bool = True) -> Value:
        """ReduceMean over ``axes`` (axes as an input from opset 18)."""
        return self._axes_form("ReduceMean", x, axes, {"keepdims": int(keepdims)}, 18)

    def unsqueeze(self, x: Value, axes: Sequence[int]) -> Value:
        """Unsqueeze at ``axes`` (axes as an input from opset 13)."""
        if not axes:
            return x
        return self._axes_form("Unsqueeze", x, axes, {}, 13)

    def transpose(self, x: Value, perm: Sequence[int]) -> Value:
        """Transpose by ``perm`` (identity permutations build nothing)."""
        if list(perm) == list(range(len(perm))):
            return x
        return self.emit("Transpose", [x], {"perm": list(perm)})

    def reshape(self, x: Value, shape: Value, type: TensorType | None = None) -> Value:
        """Reshape to a runtime shape (an int64 value)."""
        return self.emit("Reshape", [x, shape], type=type)

    def reshape_like(self, g: Value, primal: Value) -> Value:
        """``g`` reshaped to ``primal``'s shape (nothing built when the types already agree)."""
        gs, ps = self.shape_of(g), self.shape_of(primal)
        if gs is not None and ps is not None and self._same_shape(gs, ps):
            return g
        static = self.static_shape(primal)
        target = self.ints(static) if static is not None else self.shape(primal)
        return self.reshape(g, target, self.like(g, primal))

    def expand_like(self, g: Value, primal: Value) -> Value:
        """``g`` broadcast to ``primal``'s shape."""
        return self.emit("Expand", [g, self.shape(primal)], type=self.like(g, primal))

    def zeros_like(self, primal: Value) -> Value:
        """Zeros of ``primal``'s shape and type."""
        zero = TensorData.from_array(np.zeros((1,), dtype=primal.type.dtype.to_numpy()))
        return self.emit("ConstantOfShape", [self.shape(primal)], {"value": zero}, type=primal.type)

    def cast_like(self, x: Value, like: Value) -> Value:
        """``x`` cast to ``like``'s element type (nothing built when they agree)."""
        if x.type.dtype == like.type.dtype:
            return x
        return self.emit("Cast", [x], {"to": int(like.type.dtype)})

    @staticmethod
    def _same_shape(a: tuple, b: tuple) -> bool:
        return len(a) == len(b) and all(x == y and x is not None for x, y in zip(a, b))

    def unbroadcast(self, g: Value, primal: Value) -> Value:
        """Sum ``g`` (the cotangent of a broadcast result) down to ``primal``'s shape.

        Statically, the axes to sum are the leading ones ``primal`` lacks and those where
        ``primal`` has a 1 and ``g`` not. When symbolic dims leave that open, the axes are
        computed at runtime (``NonZero`` over a shape comparison; opset 13 and later).
        """
        gs, ps = self.shape_of(g), self.shape_of(primal)
        if gs is None or ps is None:
            raise AutodiffError("cannot undo broadcasting over a value of unknown rank")
        if self._same_shape(gs, ps):
            return g
        lead = len(gs) - len(ps)
        if lead < 0:
            raise AutodiffError(f"cotangent of rank {len(gs)} for a value of rank {len(ps)}")
        axes = list(range(lead))
        ambiguous = False
        for i, d in enumerate(ps):
            gd = gs[lead + i]
            if d == 1:
                if gd != 1:
                    axes.append(lead + i)
            elif isinstance(d, int) or (d is not None and d == gd):
                continue  # equal sizes (broadcasting never stretches a dim other than 1)
            else:
                ambiguous = True
        if ambiguous:
            return self._unbroadcast_dynamic(g, primal, lead)
        summed = self.reduce_sum(g, axes, keepdims=True)
        return self.reshape_like(summed, primal)

    def _unbroadcast_dynamic(self, g: Value, primal: Value, lead: int) -> Value:
        if self.opset < 13:
            raise AutodiffError(
                "undoing broadcasting over symbolic dims needs opset 13 or later; give the "
                "model's input shapes"
            )
        pshape = self.shape(primal)
        if lead:
            pshape_full = self.emit("Concat", [self.ints([1] * lead), pshape], {"axis": 0})
        else:
            pshape_full = pshape
        one = self.ints([1])
        stretched = self.emit(
            "And",
            [
                self.emit("Equal", [pshape_full, one]),
                self.emit("Not", [self.emit("Equal", [self.shape(g), one])]),
            ],
        )
        axes = self.emit("Squeeze", [self.emit("NonZero", [stretched]), self.ints([0])])
        summed = self.emit(
            "ReduceSum", [g, axes], {"keepdims": 1, "noop_with_empty_axes": 1}, type=g.type
        )
        return self.reshape(summed, pshape, self.like(g, primal))
