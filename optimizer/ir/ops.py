"""The op registry: per op, its type/shape function and numpy reference semantics.

Hand-written entries cover the ops that graphopt's passes and rules create
or reason about. Every other standard ONNX op is still understood: the ONNX
importer installs :attr:`OpRegistry.schema_provider` (ONNX's own op schemas)
and :attr:`OpRegistry.fallback_infer` (ONNX shape inference on one node), so
the IR itself never imports onnx. Ops known to neither are *opaque*: kept in
the graph, typed from the model, never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optimizer.ir.graph import Node, Value
from optimizer.ir.types import Dim, DType, Shape, TensorType, ValueType

#: infer(node, opset_version) -> output types, or None when it cannot tell.
InferFn = Callable[[Node, "int | None"], "list[ValueType] | None"]
#: reference(node, inputs) -> outputs, numpy semantics of the op.
ReferenceFn = Callable[[Node, Sequence["np.ndarray | None"]], "list[np.ndarray]"]

#: Ops whose every evaluation may differ: never merged, never folded.
NONDETERMINISTIC_OPS = frozenset(
    {
        "RandomNormal",
        "RandomUniform",
        "RandomNormalLike",
        "RandomUniformLike",
        "Multinomial",
        "Bernoulli",
    }
)


def dropout_trains(opset: int | None, is_test: int, training_mode: Value | None) -> bool:
    """Whether a Dropout drops at random instead of copying its input: before opset 7 when
    ``is_test`` (default 0) is off, from opset 12 when ``training_mode`` is not constant false."""
    if (opset or 0) < 7:
        return not is_test
    if training_mode is None:
        return False
    mode = training_mode.constant
    return mode is None or bool(mode.numpy().reshape(-1)[0])


#: Ops that carry subgraphs.
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan", "SequenceMap"})


@dataclass(frozen=True)
class OpDef:
    """One registry entry."""

    name: str
    domain: str = ""
    infer: InferFn | None = None
    reference: ReferenceFn | None = None
    commutative: bool = False


class OpRegistry:
    """Ops by (domain, name); see the module docstring for the fallbacks."""

    def __init__(self) -> None:
        self._ops: dict[tuple[str, str], OpDef] = {}
        #: (domain, op, opset) -> True when ONNX defines the op; installed by onnx_io.
        self.schema_provider: Callable[[str, str, int | None], bool] | None = None
        #: ONNX shape inference for one node; installed by onnx_io.
        self.fallback_infer: InferFn | None = None
        #: (domain, op, opset, attribute) -> the schema's default value of the attribute as the
        #: IR stores it (ints as a tuple, strings as bytes), or None when it has none; installed
        #: by onnx_io.
        self.attribute_default: Callable[[str, str, int | None, str], Any | None] | None = None
        #: (domain, op, opset) -> (fewest inputs, most inputs, attribute names) of the op's
        #: schema at that opset, or None when ONNX does not define it there; installed by onnx_io.
        self.op_signature: (
            Callable[[str, str, int | None], tuple[int, int, frozenset[str]] | None] | None
        ) = None

    def register(self, opdef: OpDef) -> OpDef:
        """Add or replace an entry."""
        self._ops[(_norm(opdef.domain), opdef.name)] = opdef
        return opdef

    def lookup(self, domain: str, name: str) -> OpDef | None:
        """The hand-written entry, or None."""
        return self._ops.get((_norm(domain), name))

    def is_standard(self, domain: str, name: str, opset: int | None = None) -> bool:
        """Whether ONNX (or this registry) defines the op."""
        if self.lookup(domain, name) is not None and _norm(domain) == "":
            return True
        return bool(self.schema_provider and self.schema_provider(domain, name, opset))

    def infer(self, node: Node, opset: int | None) -> list[ValueType] | None:
        """Output types of ``node``: hand-written function first, then ONNX's inference."""
        opdef = self.lookup(node.domain, node.op)
        if opdef is not None and opdef.infer is not None:
            result = opdef.infer(node, opset)
            if result is not None:
                return result
        if self.fallback_infer is not None:
            return self.fallback_infer(node, opset)
        return None

    def default_of(self, domain: str, name: str, opset: int | None, attribute: str) -> Any | None:
        """The schema default of ``attribute`` of op ``name`` (None when unknown or absent)."""
        if self.attribute_default is None:
            return None
        return self.attribute_default(_norm(domain), name, opset, attribute)

    def fits_signature(
        self, domain: str, name: str, opset: int | None, num_inputs: int, attributes: Iterable[str]
    ) -> bool | None:
        """Whether ONNX defines op ``name`` at ``opset`` taking ``num_inputs`` inputs and these
        attributes (None when no signature provider is installed)."""
        if self.op_signature is None:
            return None
        signature = self.op_signature(_norm(domain), name, opset)
        if signature is None:
            return False
        fewest, most, names = signature
        return fewest <= num_inputs <= most and all(a in names for a in attributes)

    def __iter__(self):
        return iter(self._ops.values())


def _norm(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


REGISTRY = OpRegistry()


# ---------------------------------------------------------------- shape helpers


def _tensor(value) -> TensorType | None:
    return value.type if value is not None and isinstance(value.type, TensorType) else None


def broadcast_shapes(*shapes: Shape) -> Shape:
    """Multidirectional (numpy) broadcasting over partially known shapes."""
    if any(s is None for s in shapes):
        return None
    rank = max(len(s) for s in shapes)  # type: ignore[arg-type]
    result: list[Dim] = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]  # type: ignore[arg-type]
        known = {d for d in dims if isinstance(d, int) and d != 1}
        if len(known) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast")
        if known:
            result.append(known.pop())
        elif all(d == 1 for d in dims):
            result.append(1)
        else:
            symbols = {d for d in dims if d != 1}
            result.append(symbols.pop() if len(symbols) == 1 else None)
    return tuple(result)


def _const_ints(value) -> list[int] | None:
    """The contents of a constant int tensor input, or None."""
    if value is None or value.constant is None:
        return None
    return [int(x) for x in value.constant.numpy().reshape(-1)]


def _axes(node: Node, opset: int | None, input_index: int) -> list[int] | None:
    axes = node.attr("axes")
    if axes is not None:
        return list(axes)
    if len(node.inputs) > input_index:
        return _const_ints(node.inputs[input_index])
    return []


# ---------------------------------------------------------------- type functions


def _same_as_first(node: Node, opset: int | None) -> list[ValueType] | None:
    t = _tensor(node.inputs[0])
    return None if t is None else [t] + [TensorType(DType.BOOL, t.shape)] * (len(node.outputs) - 1)


def _broadcast(result_dtype: DType | None) -> InferFn:
    def infer(node: Node, opset: int | None) -> list[ValueType] | None:
        types = [_tensor(v) for v in node.inputs]
        if any(t is None for t in types):
            return None
        first = types[0] if result_dtype is None or node.op != "Where" else types[1]
        dtype = result_dtype if result_dtype is not None else first.dtype  # type: ignore[union-attr]
        if node.op == "Where":
            dtype = types[1].dtype  # type: ignore[union-attr]
        if opset is not None and opset < 7 and node.op in _LEGACY_BROADCAST:
            # Before opset 7 B broadcasts to A (``broadcast``/``axis`` attributes), or the
            # shapes are equal: the result has A's shape, numpy's rules do not apply.
            return [TensorType(dtype, types[0].shape)]  # type: ignore[union-attr]
        return [TensorType(dtype, broadcast_shapes(*(t.shape for t in types)))]  # type: ignore[union-attr]

    return infer


def _dropout(node: Node, opset: int | None) -> list[ValueType] | None:
    t = _tensor(node.inputs[0])
    if t is None:
        return None
    # The mask has the input's type before opset 10 and is bool since.
    mask = t if opset is not None and opset < 10 else TensorType(DType.BOOL, t.shape)
    return [t, mask][: len(node.outputs)]


def cast_target(node: Node) -> DType:
    """Cast's ``to``: a type code, or before opset 6 a type name such as b"FLOAT"."""
    to = node.attr("to")
    return DType[to.decode().upper()] if isinstance(to, bytes) else DType(to)


def _cast(node: Node, opset: int | None) -> list[ValueType] | None:
    t = _tensor(node.inputs[0])
    return None if t is None else [TensorType(cast_target(node), t.shape)]


def _matmul(node: Node, opset: int | None) -> list[ValueType] | None:
    a, b = _tensor(node.inputs[0]), _tensor(node.inputs[1])
    if a is None or b is None:
        return None
    if a.shape is None or b.shape is None:
        return [TensorType(a.dtype, None)]
    sa, sb = list(a.shape), list(b.shape)
    squeeze_a, squeeze_b = len(sa) == 1, len(sb) == 1
    if squeeze_a:
        sa = [1] + sa
    if squeeze_b:
        sb = sb + [1]
    batch = broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2]))
    shape = list(batch) + [sa[-2], sb[-1]]  # type: ignore[arg-type]
    if squeeze_a:
        shape.pop(-2)
    if squeeze_b:
        shape.pop(-1)
    return [TensorType(a.dtype, tuple(shape))]


def _gemm(node: Node, opset: int | None) -> list[ValueType] | None:
    a, b = _tensor(node.inputs[0]), _tensor(node.inputs[1])
    if a is None or b is None or a.shape is None or b.shape is None:
        return None
    m = a.shape[1] if node.attr("transA", 0) else a.shape[0]
    n = b.shape[0] if node.attr("transB", 0) else b.shape[1]
    return [TensorType(a.dtype, (m, n))]


def _transpose(node: Node, opset: int | None) -> list[ValueType] | None:
    t = _tensor(node.inputs[0])
    if t is None or t.shape is None:
        return None if t is None else [t]
    perm = node.attr("perm") or tuple(reversed(range(len(t.shape))))
    return [TensorType(t.dtype, tuple(t.shape[p] for p in perm))]


def _concat(node: Node, opset: int | None) -> list[ValueType] | None:
    types = [_tensor(v) for v in node.inputs]
    if any(t is None for t in types) or any(t.shape is None for t in types):  # type: ignore[union-attr]
        return None if any(t is None for t in types) else [TensorType(types[0].dtype, None)]  # type: ignore[union-attr]
    rank = len(types[0].shape)  # type: ignore[union-attr,arg-type]
    axis = node.attr("axis", 1) % rank  # optional (default 1) before opset 4
    shape: list[Dim] = list(types[0].shape)  # type: ignore[union-attr,arg-type]
    total: Dim = 0
    for t in types:
        d = t.shape[axis]  # type: ignore[union-attr,index]
        total = total + d if isinstance(total, int) and isinstance(d, int) else None
    for i in range(rank):
        if i != axis:
            shape[i] = broadcast_shapes(*((t.shape[i],) for t in types))[0]  # type: ignore[union-attr,index]
    shape[axis] = total
    return [TensorType(types[0].dtype, tuple(shape))]  # type: ignore[union-attr]


def _shape_op(node: Node, opset: int | None) -> list[ValueType] | None:
    t = _tensor(node.inputs[0])
    if t is None or t.shape is None:
        return [TensorType(DType.INT64, (None,))]
    rank = len(t.shape)
    start, end = node.attr("start", 0), node.attr("end", rank)
    start, end = (max(0, min(rank, x + rank if x < 0 else x)) for x in (start, end))
    return [TensorType(DType.INT64, (max(0, end - start),))]


def _unsqueeze(node: Node, opset: int | None) -> list[ValueType] | None:
    t, axes = _tensor(node.inputs[0]), _axes(node, opset, 1)
    if t is None or t.shape is None or axes is None:
        return None
    rank = len(t.shape) + len(axes)
    axes = sorted(a % rank for a in axes)
    dims = iter(t.shape)
    return [TensorType(t.dtype, tuple(1 if i in axes else next(dims) for i in range(rank)))]


def _squeeze(node: Node, opset: int | None) -> list[ValueType] | None:
    t, axes = _tensor(node.inputs[0]), _axes(node, opset, 1)
    if t is None or t.shape is None or axes is None:
        return None
    rank = len(t.shape)
    if not axes:
        if not all(isinstance(d, int) for d in t.shape):
            return None
        return [TensorType(t.dtype, tuple(d for d in t.shape if d != 1))]
    drop = {a % rank for a in axes}
    return [TensorType(t.dtype, tuple(d for i, d in enumerate(t.shape) if i not in drop))]


def _reshape(node: Node, opset: int | None) -> list[ValueType] | None:
    t = _tensor(node.inputs[0])
    if len(node.inputs) > 1:
        target = _const_ints(node.inputs[1])
    else:  # before opset 5 the target is the ``shape`` attribute
        target = None if node.attr("shape") is None else list(node.attr("shape"))
    if t is None or target is None:
        return None
    allowzero = node.attr("allowzero", 0)
    # ONNX: at most one -1 (inferred) and no other negative entry. A target that breaks
    # this (a corrupted model) is an error, never a shape with negative dims.
    if any(d < -1 for d in target) or target.count(-1) > 1:
        raise ValueError(
            f"invalid Reshape target {target}: at most one -1 and no other negative dim"
        )
    dims: list[Dim] = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            dims.append(t.shape[i] if t.shape is not None and i < len(t.shape) else None)
        else:
            dims.append(d)
    total: Dim = 1
    for d in t.shape or (None,):
        total = total * d if isinstance(total, int) and isinstance(d, int) else None
    rest: Dim = 1
    for d in dims:
        if d != -1:
            rest = rest * d if isinstance(rest, int) and isinstance(d, int) else None
    if -1 in dims:
        known = isinstance(total, int) and isinstance(rest, int) and rest
        if known and total % rest:  # type: ignore[operator]
            raise ValueError(f"cannot reshape {total} elements into {target}")
        fill = total // rest if known else None  # type: ignore[operator]
        dims = [fill if d == -1 else d for d in dims]
    elif isinstance(total, int) and isinstance(rest, int) and total != rest:
        raise ValueError(f"cannot reshape {total} elements into {target}")
    return [TensorType(t.dtype, tuple(dims))]


def _flatten(node: Node, opset: int | None) -> list[ValueType] | None:
    t = _tensor(node.inputs[0])
    if t is None or t.shape is None:
        return None
    axis = node.attr("axis", 1)
    axis = axis + len(t.shape) if axis < 0 else axis  # ONNX: negative counts from the back

    def prod(dims: Sequence[Dim]) -> Dim:
        out: Dim = 1
        for d in dims:
            out = out * d if isinstance(out, int) and isinstance(d, int) else None
        return out

    return [TensorType(t.dtype, (prod(t.shape[:axis]), prod(t.shape[axis:])))]


def _conv_like(node: Node, opset: int | None) -> list[ValueType] | None:
    x = _tensor(node.inputs[0])
    if x is None or x.shape is None:
        return None
    spatial = len(x.shape) - 2
    if node.op == "Conv":
        w = _tensor(node.inputs[1])
        if w is None or w.shape is None:
            return None
        channels: Dim = w.shape[0]
        kernel = node.attr("kernel_shape") or w.shape[2:]
    else:
        channels = x.shape[1]
        kernel = node.attr("kernel_shape")
    strides = node.attr("strides") or (1,) * spatial
    dilations = node.attr("dilations") or (1,) * spatial
    pads = node.attr("pads") or (0,) * (2 * spatial)
    auto_pad = (node.attr("auto_pad") or b"NOTSET").decode()
    ceil = node.attr("ceil_mode", 0)
    dims: list[Dim] = [x.shape[0], channels]
    for i in range(spatial):
        size = x.shape[2 + i]
        if not isinstance(size, int) or not isinstance(kernel[i], int):
            dims.append(None)
            continue
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            dims.append(-(-size // strides[i]))
            continue
        padded = size + (0 if auto_pad == "VALID" else pads[i] + pads[i + spatial])
        extent = (kernel[i] - 1) * dilations[i] + 1
        span = padded - extent
        out = (-(-span // strides[i]) if ceil else span // strides[i]) + 1
        if ceil and (out - 1) * strides[i] >= size + (pads[i] if auto_pad != "VALID" else 0):
            out -= 1
        dims.append(out)
    outs: list[ValueType] = [TensorType(x.dtype, tuple(dims))]
    if len(node.outputs) > 1:
        outs.append(TensorType(DType.INT64, tuple(dims)))
    return outs


def _global_pool(node: Node, opset: int | None) -> list[ValueType] | None:
    x = _tensor(node.inputs[0])
    if x is None or x.shape is None:
        return None
    return [TensorType(x.dtype, tuple(x.shape[:2]) + (1,) * (len(x.shape) - 2))]


def _gather(node: Node, opset: int | None) -> list[ValueType] | None:
    data, idx = _tensor(node.inputs[0]), _tensor(node.inputs[1])
    if data is None or idx is None or data.shape is None or idx.shape is None:
        return None
    axis = node.attr("axis", 0) % len(data.shape)
    return [TensorType(data.dtype, data.shape[:axis] + idx.shape + data.shape[axis + 1 :])]


def _reduce(node: Node, opset: int | None) -> list[ValueType] | None:
    x = _tensor(node.inputs[0])
    if x is None or x.shape is None:
        return None
    axes = _axes(node, opset, 1)
    if axes is None:
        return None
    rank = len(x.shape)
    if not axes:
        if node.attr("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(rank))
    drop = {a % rank for a in axes}
    keep = node.attr("keepdims", 1)
    dims = tuple((1 if keep else None) if i in drop else d for i, d in enumerate(x.shape))
    return [TensorType(x.dtype, tuple(d for i, d in enumerate(dims) if keep or i not in drop))]


# ---------------------------------------------------------------- reference semantics


def _unary(fn: Callable[[np.ndarray], np.ndarray]) -> ReferenceFn:
    def ref(node: Node, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        x = inputs[0]
        return [np.asarray(fn(x)).astype(x.dtype, copy=False)]  # type: ignore[union-attr]

    return ref


def _binary(
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray], keep_dtype: bool = True
) -> ReferenceFn:
    def ref(node: Node, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        a, b = inputs[0], inputs[1]
        out = np.asarray(fn(a, b))  # type: ignore[arg-type]
        return [out.astype(a.dtype, copy=False) if keep_dtype else out]  # type: ignore[union-attr]

    return ref


def _variadic(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> ReferenceFn:
    def ref(node: Node, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        acc = inputs[0]
        for x in inputs[1:]:
            acc = fn(acc, x)  # type: ignore[arg-type]
        return [np.asarray(acc).astype(inputs[0].dtype, copy=False)]  # type: ignore[union-attr]

    return ref


def _softmax(node: Node, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    x = inputs[0]
    axis = node.attr("axis", -1)
    shifted = x - x.max(axis=axis, keepdims=True)  # type: ignore[union-attr]
    e = np.exp(shifted)
    return [(e / e.sum(axis=axis, keepdims=True)).astype(x.dtype)]  # type: ignore[union-attr]


def _erf(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return erf(x)


def _gemm_ref(node: Node, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    a, b = inputs[0], inputs[1]
    a = a.T if node.attr("transA", 0) else a  # type: ignore[union-attr]
    b = b.T if node.attr("transB", 0) else b  # type: ignore[union-attr]
    out = node.attr("alpha", 1.0) * (a @ b)
    if len(inputs) > 2 and inputs[2] is not None:
        out = out + node.attr("beta", 1.0) * inputs[2]
    return [np.asarray(out).astype(inputs[0].dtype)]  # type: ignore[union-attr]


def _reshape_ref(node: Node, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    target = inputs[1] if len(inputs) > 1 else node.attr("shape")  # attribute before opset 5
    x, shape = inputs[0], [int(d) for d in target]  # type: ignore[union-attr]
    if not node.attr("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]  # type: ignore[union-attr]
    return [x.reshape(shape)]  # type: ignore[union-attr]


def _register_all() -> None:
    same = _same_as_first
    unary = {
        "Identity": lambda x: x,
        "Relu": lambda x: np.maximum(x, 0),
        "Neg": np.negative,
        "Abs": np.abs,
        "Exp": np.exp,
        "Log": np.log,
        "Sqrt": np.sqrt,
        "Reciprocal": np.reciprocal,
        "Tanh": np.tanh,
        "Sigmoid": lambda x: 1 / (1 + np.exp(-x)),
        "Erf": _erf,
        "Floor": np.floor,
        "Ceil": np.ceil,
        "Sin": np.sin,
        "Cos": np.cos,
        "Sign": np.sign,
        "Not": np.logical_not,
    }
    for name, fn in unary.items():
        REGISTRY.register(OpDef(name, infer=same, reference=_unary(fn)))
    for name in ("LeakyRelu", "Elu", "Selu", "HardSigmoid", "HardSwish", "Softplus", "Gelu",
                 "Round",
                 "Clip", "LogSoftmax", "BatchNormalization", "InstanceNormalization",
                 "LayerNormalization", "Mish", "Celu", "LRN"):  # fmt: skip
        REGISTRY.register(OpDef(name, infer=same if name not in _MULTI_STAT else None))
    REGISTRY.register(OpDef("Dropout", infer=_dropout))
    REGISTRY.register(OpDef("Softmax", infer=same, reference=_softmax))
    binary = {
        "Add": (np.add, True),
        "Mul": (np.multiply, True),
        "Sub": (np.subtract, False),
        "Div": (np.divide, False),
        "Pow": (np.power, False),
    }
    for name, (fn, commutative) in binary.items():
        ref = _binary(fn if name != "Div" else _onnx_div)
        REGISTRY.register(
            OpDef(name, infer=_broadcast(None), reference=ref, commutative=commutative)
        )
    for name, fn in (("Max", np.maximum), ("Min", np.minimum), ("Sum", np.add)):
        REGISTRY.register(
            OpDef(name, infer=_broadcast(None), reference=_variadic(fn), commutative=True)
        )
    REGISTRY.register(OpDef("Mean", infer=_broadcast(None), commutative=True))
    for name, fn in (("Equal", np.equal), ("Less", np.less), ("Greater", np.greater),
                     ("LessOrEqual", np.less_equal), ("GreaterOrEqual", np.greater_equal),
                     ("And", np.logical_and), ("Or", np.logical_or),
                     ("Xor", np.logical_xor)):  # fmt: skip
        REGISTRY.register(
            OpDef(name, infer=_broadcast(DType.BOOL), reference=_binary(fn, keep_dtype=False))
        )
    REGISTRY.register(
        OpDef("Where", infer=_broadcast(DType.UNDEFINED), reference=lambda n, i: [np.where(*i)])
    )
    # The slope broadcasts unidirectionally to X (and per channel before opset 7): shape of X.
    REGISTRY.register(OpDef("PRelu", infer=same))
    REGISTRY.register(
        OpDef(
            "Cast",
            infer=_cast,
            reference=lambda n, i: [i[0].astype(cast_target(n).to_numpy())],  # type: ignore[union-attr]
        )
    )
    REGISTRY.register(
        OpDef("MatMul", infer=_matmul, reference=lambda n, i: [np.matmul(i[0], i[1])])
    )
    REGISTRY.register(OpDef("Gemm", infer=_gemm, reference=_gemm_ref))
    REGISTRY.register(
        OpDef(
            "Transpose",
            infer=_transpose,
            reference=lambda n, i: [np.transpose(i[0], n.attr("perm"))],
        )
    )
    REGISTRY.register(
        OpDef(
            "Concat",
            infer=_concat,
            reference=lambda n, i: [np.concatenate(i, axis=n.attr("axis", 1))],  # type: ignore[arg-type]
        )
    )
    REGISTRY.register(OpDef("Shape", infer=_shape_op))
    REGISTRY.register(OpDef("Size", infer=lambda n, o: [TensorType(DType.INT64, ())]))
    REGISTRY.register(OpDef("Unsqueeze", infer=_unsqueeze))
    REGISTRY.register(OpDef("Squeeze", infer=_squeeze))
    REGISTRY.register(OpDef("Reshape", infer=_reshape, reference=_reshape_ref))
    REGISTRY.register(OpDef("Flatten", infer=_flatten))
    for name in ("Conv", "MaxPool", "AveragePool"):
        REGISTRY.register(OpDef(name, infer=_conv_like))
    for name in ("GlobalAveragePool", "GlobalMaxPool"):
        REGISTRY.register(OpDef(name, infer=_global_pool))
    REGISTRY.register(
        OpDef(
            "Gather",
            infer=_gather,
            reference=lambda n, i: [np.take(i[0], i[1], axis=n.attr("axis", 0))],
        )
    )
    for name in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2"):
        REGISTRY.register(OpDef(name, infer=_reduce))


def _onnx_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Div: true division for floats, truncation toward zero for integers."""
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(a / b).astype(a.dtype)
    return np.divide(a, b)


# Ops that took ``broadcast``/``axis`` attributes (B broadcast to A) before opset 7.
_LEGACY_BROADCAST = frozenset(
    {"Add", "Sub", "Mul", "Div", "Pow", "And", "Or", "Xor", "Equal", "Less", "Greater"}
)

# Ops whose extra outputs (running statistics, masks) our same-as-first rule does not describe.
_MULTI_STAT = frozenset({"BatchNormalization", "LayerNormalization"})

_register_all()
