"""FX GraphModule -> ONNX model, with parameters and buffers frozen as initializers.

:func:`export_graph` takes the graph dynamo (or aot_autograd) hands to the backend and the
arguments of a real call, and returns an :class:`ExportedGraph`: the ONNX model plus what the
runner needs to call it and to rebuild the graph's outputs. The graph itself is never
modified (the eager fallback runs it); the export works on a copy in which

- the *frozen* arguments (parameters and buffers, in inference) become buffers of the copy,
  so ``torch.export`` lifts them and the ONNX exporter writes them as initializers, where
  the optimizer can fold them;
- a dynamic size argument (a ``SymInt`` placeholder, under ``dynamic=True``) becomes
  ``aten.sym_size`` of the tensor dimension it was traced from, so the ONNX model keeps a
  symbolic dimension instead of an extra input; a size no tensor carries is specialized
  (baked in, and part of the cache key);
- a Python number dynamo passes as a 0-d tensor (``pass_arg_as_tensor``: a float module
  attribute under ``dynamic=True``, such as BatchNorm's momentum) is specialized likewise;
- outputs that are not computed tensors (an argument returned as is, a constant, a size)
  are produced in Python, so that returning an input keeps its identity;
- an in-place update of an input (``x.add_(1)``) becomes an extra ONNX output that the
  runner copies back into the input, as eager mutates it. A frozen buffer that the graph
  updates is not frozen after all: it is passed as an input and updated the same way.

The ONNX model comes from ``torch.export.export(strict=False)`` (symbolic dimensions as
``Dim.AUTO``) and ``torch.onnx.export`` of that program.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx
import torch
import torch.fx
from torch.utils import _pytree as pytree

from optimizer.errors import GraphoptError
from optimizer.torch_backend.decompositions import decompose_for_onnx

#: The ONNX exporter's loggers (the registry warns about missing torchvision ops per export).
_NOISY_LOGGERS = (
    "torch.onnx",
    "torch.export",
    "torch._export",
    "torch.fx.experimental",
    "onnx_ir",
    "onnxscript",
)


class ExportError(GraphoptError):
    """A graph could not be exported to ONNX (the runner falls back to eager)."""


@dataclass(frozen=True)
class Output:
    """How one leaf of the graph's output is produced.

    ``kind``: ``"onnx"`` (ONNX output ``index``), ``"arg"`` (argument ``index`` as is),
    ``"const"`` (``value``), ``"size"`` (``value``: a sympy expression of the argument sizes).
    """

    kind: str
    index: int = -1
    value: Any = None


@dataclass
class ExportedGraph:
    """An exported graph and how to call it (see the module docstring).

    - ``model``: the ONNX model (frozen arguments are initializers);
    - ``feeds``: the argument index of each ONNX input, in input order;
    - ``input_dims``: per ONNX input, its dimensions (``None`` where symbolic);
    - ``outputs`` and ``out_spec``: the leaves of the graph's output and their structure;
    - ``mutations``: ``(ONNX output index, argument index)`` pairs to copy back;
    - ``frozen``: argument indices baked in as initializers;
    - ``specialized``: argument index -> value baked in (sizes and Python numbers);
    - ``symbols``: sympy symbol -> ``(argument index, dimension or None)`` where its value is
      read at run time (``None``: the argument is the size itself);
    - ``seconds``: how long the export took.
    """

    model: onnx.ModelProto
    feeds: tuple[int, ...]
    input_dims: tuple[tuple[int | None, ...], ...]
    outputs: tuple[Output, ...]
    out_spec: Any
    mutations: tuple[tuple[int, int], ...]
    frozen: tuple[int, ...]
    specialized: dict[int, Any]
    symbols: dict[Any, tuple[int, int | None]] = field(default_factory=dict)
    seconds: float = 0.0

    def drop_weights(self) -> None:
        """Keep only the model's interface (inputs, outputs, opsets): once a session holds
        the model, the exported copy of every weight is dead memory."""
        skeleton = onnx.ModelProto()
        skeleton.ir_version = self.model.ir_version
        skeleton.opset_import.extend(self.model.opset_import)
        skeleton.graph.name = self.model.graph.name
        skeleton.graph.input.extend(self.model.graph.input)
        skeleton.graph.output.extend(self.model.graph.output)
        self.model = skeleton

    @property
    def dynamic(self) -> bool:
        """Whether some input dimension is symbolic (one model serves many shapes)."""
        return any(d is None for dims in self.input_dims for d in dims)

    def accepts(self, args: Sequence[Any]) -> bool:
        """Whether this model computes the graph for ``args``: every fed tensor has the
        exported rank and static dimensions, and every specialized value is unchanged."""
        for i, dims in zip(self.feeds, self.input_dims):
            shape = args[i].shape
            if len(shape) != len(dims) or any(
                d is not None and d != s for d, s in zip(dims, shape)
            ):
                return False
        return all(_same_value(args[i], v) for i, v in self.specialized.items())


def _same_value(arg: Any, value: Any) -> bool:
    if isinstance(arg, torch.Tensor):
        return arg.numel() == 1 and arg.item() == value
    return arg == value


def meta_value(node: torch.fx.Node) -> Any:
    """The traced value of ``node``: dynamo's ``example_value`` or aot's ``val``."""
    return node.meta.get("example_value", node.meta.get("val"))


def placeholders(gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    """The graph's placeholder nodes, in argument order."""
    return [n for n in gm.graph.nodes if n.op == "placeholder"]


def _expr(x: Any) -> Any:
    """The sympy expression of a SymInt (a plain int for an int)."""
    return x.node.expr if isinstance(x, torch.SymInt) else x


def size_symbols(gm: torch.fx.GraphModule) -> dict[Any, tuple[int, int | None]]:
    """Each size symbol of the graph and where to read it: ``(argument, dimension)`` of the
    first tensor argument whose dimension is that symbol, or ``(argument, None)`` for a
    SymInt argument no tensor dimension carries."""
    found: dict[Any, tuple[int, int | None]] = {}
    loose: dict[Any, int] = {}
    for i, node in enumerate(placeholders(gm)):
        value = meta_value(node)
        if isinstance(value, torch.Tensor):
            for d, size in enumerate(value.shape):
                expr = _expr(size)
                if getattr(expr, "is_Symbol", False):
                    found.setdefault(expr, (i, d))
        elif isinstance(value, torch.SymInt) and getattr(_expr(value), "is_Symbol", False):
            loose.setdefault(_expr(value), i)
    for sym, i in loose.items():
        found.setdefault(sym, (i, None))
    return found


def bind_symbols(symbols: dict[Any, tuple[int, int | None]], args: Sequence[Any]) -> dict:
    """Symbol -> int for the call with ``args``."""
    return {
        sym: int(args[i]) if d is None else int(args[i].shape[d]) for sym, (i, d) in symbols.items()
    }


def python_scalar_args(gm: torch.fx.GraphModule) -> frozenset[int]:
    """Indices of the arguments that are Python numbers dynamo passes as 0-d tensors
    (``pass_arg_as_tensor``). Read it when the backend is called: dynamo drops the
    placeholders' ``grapharg`` metadata afterwards."""
    return frozenset(
        i
        for i, n in enumerate(placeholders(gm))
        if getattr(n.meta.get("grapharg"), "pass_arg_as_tensor", False)
    )


def _substitute(node: torch.fx.Node, value: Any) -> None:
    """Replace every use of ``node`` by the constant ``value``."""
    for user in list(node.users):
        user.args = torch.fx.node.map_arg(user.args, lambda a: value if a is node else a)
        user.kwargs = torch.fx.node.map_arg(user.kwargs, lambda a: value if a is node else a)


@contextlib.contextmanager
def quiet_export():
    """Run an export with no active dispatch modes (aot_autograd's runtime leaves one on,
    which breaks ``torch.export``), outside inference mode, and without its log noise."""
    from torch.utils._python_dispatch import _disable_current_modes

    loggers = [logging.getLogger(name) for name in _NOISY_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            _disable_current_modes(),
            torch.inference_mode(False),
            torch.no_grad(),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Failed to", "- ", "#")):
            return f"{type(exc).__name__}: {line}"[:300]
    return type(exc).__name__


def _exception_summary(exc: BaseException) -> str:
    """The informative line of a torch.onnx error (its message leads with boilerplate)."""
    text = str(exc)
    marker = "## Exception summary"
    if marker in text:
        rest = [ln.strip() for ln in text.split(marker, 1)[1].splitlines() if ln.strip()]
        if rest:
            return rest[0][:300]
    cause = exc.__cause__ or exc.__context__
    if cause is not None and type(exc).__module__.startswith("torch.onnx"):
        return _first_line(cause)
    return _first_line(exc)


class _Copy:
    """A copy of the graph being rewritten for export."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        graph = torch.fx.Graph()
        self.map: dict[torch.fx.Node, torch.fx.Node] = {}
        out = graph.graph_copy(gm.graph, self.map)
        self.graph = graph
        self.out = out
        self.root = gm
        self.buffers: dict[str, torch.Tensor] = {}

    def constant(self, node: torch.fx.Node, name: str, tensor: torch.Tensor) -> None:
        """Make placeholder ``node`` (of the copy) a buffer holding ``tensor``."""
        self.buffers[name] = tensor.detach()
        with self.graph.inserting_before(node):
            attr = self.graph.get_attr(name)
        attr.meta = dict(node.meta)
        node.replace_all_uses_with(attr)
        self.graph.erase_node(node)

    def size_of(self, node: torch.fx.Node, tensor: torch.fx.Node, dim: int) -> None:
        """Make SymInt placeholder ``node`` read dimension ``dim`` of ``tensor``."""
        # after every placeholder (the tensor may come after the size in argument order)
        where = next((n for n in self.graph.nodes if n.op != "placeholder"), None)
        ctx = self.graph.inserting_before(where) if where is not None else contextlib.nullcontext()
        with ctx:
            size = self.graph.call_function(torch.ops.aten.sym_size.int, (tensor, dim))
        size.meta = dict(node.meta)
        node.replace_all_uses_with(size)
        self.graph.erase_node(node)

    def module(self, outputs: Sequence[torch.fx.Node]) -> torch.fx.GraphModule:
        self.graph.output(tuple(outputs))
        attrs: dict[str, Any] = {}
        for node in self.graph.nodes:
            if node.op in ("get_attr", "call_module"):
                attrs[node.target] = self.buffers.get(node.target)
                if attrs[node.target] is None:
                    attrs[node.target] = _lookup(self.root, node.target)
        gm = torch.fx.GraphModule(attrs, self.graph)
        for name, tensor in self.buffers.items():
            delattr(gm, name)  # set as a plain attribute above; a buffer is lifted by name
            gm.register_buffer(name, tensor)
        gm.eval()  # the exporter warns about modules in training mode; graphs have no mode
        return gm


@functools.cache
def _registry():
    """The exporter's table of ONNX implementations of torch ops, built once per process
    (building it reads the source of some 500 onnxscript functions: about a second per
    export otherwise). None when this torch lays its exporter out differently."""
    try:
        from torch.onnx import _constants as onnx_constants
        from torch.onnx._internal.exporter import _core, _registration

        # the public export's default opset (20: Gelu and friends stay single nodes)
        opset = onnx_constants.ONNX_DEFAULT_OPSET
        return _core.export, _registration.ONNXRegistry.from_torchlib(opset), opset
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - other torch versions
        return None


def _to_onnx(program, optimize: bool):
    """``torch.onnx.export(program)``, with the exporter's registry built once (the public
    function, which rebuilds it, where the private entry point is missing)."""
    cached = _registry()
    if cached is None:  # pragma: no cover - other torch versions
        return torch.onnx.export(program, verbose=False, optimize=optimize)
    core_export, registry, opset = cached
    return core_export(
        program, registry=registry, verbose=False, optimize=optimize, opset_version=opset
    )


def _lookup(module: torch.nn.Module, target: str) -> Any:
    value: Any = module
    for part in target.split("."):
        value = getattr(value, part)
    return value


def export_graph(
    gm: torch.fx.GraphModule,
    args: Sequence[Any],
    *,
    frozen: Collection[int] = (),
    scalars: Collection[int] = (),
    dynamic: bool = True,
    onnx_optimize: bool = True,
) -> ExportedGraph:
    """Export ``gm`` called with ``args`` (real tensors) to ONNX; see the module docstring.

    ``frozen``: argument indices to bake in as initializers (parameters and buffers).
    ``scalars``: argument indices of Python numbers passed as tensors (specialized).
    ``dynamic``: keep the symbolic dimensions dynamo traced (else every shape is static).
    ``onnx_optimize``: let the exporter run onnxscript's optimizer on its output.
    Raises :class:`ExportError` with a one-line reason when the graph cannot be exported.
    """
    import time

    start = time.perf_counter()
    frozen = set(frozen)
    mutated: list[int] = []
    for _ in range(3):  # a retry per discovered mutation kind at most
        try:
            result, mutated_frozen, mutated_inputs = _export_once(
                gm, args, frozen, set(scalars), mutated, dynamic, onnx_optimize
            )
        except ExportError:
            raise
        except Exception as exc:  # noqa: BLE001 - any exporter failure means "run eagerly"
            raise ExportError(f"torch.onnx.export failed: {_exception_summary(exc)}") from exc
        if not mutated_frozen and not mutated_inputs:
            result.seconds = time.perf_counter() - start
            return result
        frozen -= set(mutated_frozen)
        mutated = sorted(set(mutated) | set(mutated_frozen) | set(mutated_inputs))
    raise ExportError("the graph's in-place updates of its inputs could not be exported")


def _export_once(gm, args, frozen, scalars, mutated, dynamic, onnx_optimize):
    from torch.export import Dim

    nodes = placeholders(gm)
    if len(nodes) != len(args):
        raise ExportError(f"the graph has {len(nodes)} inputs but was called with {len(args)}")
    symbols = size_symbols(gm) if dynamic else {}
    copy = _Copy(gm)
    feeds: list[int] = []
    specialized: dict[int, Any] = {}
    baked: list[int] = []
    dynamic_shapes: list[Any] = []
    deferred_sizes: list[tuple[torch.fx.Node, int, int]] = []
    for i, (node, arg) in enumerate(zip(nodes, args)):
        mine = copy.map[node]
        if not node.users and i not in mutated:
            copy.graph.erase_node(mine)
        elif i in frozen and isinstance(arg, torch.Tensor):
            copy.constant(mine, f"_graphopt_frozen_{i}", arg)
            baked.append(i)
        elif isinstance(arg, torch.Tensor) and i in scalars:
            value = arg.item()
            specialized[i] = value
            for user in list(mine.users):
                if user.op == "call_method" and user.target == "item":
                    _substitute(user, value)
                    copy.graph.erase_node(user)
            if mine.users:
                copy.constant(mine, f"_graphopt_scalar_{i}", arg.detach().clone())
            else:
                copy.graph.erase_node(mine)
        elif isinstance(arg, torch.Tensor):
            feeds.append(i)
            value = meta_value(node)
            dims = {}
            if dynamic and isinstance(value, torch.Tensor):
                dims = {
                    d: Dim.AUTO
                    for d, s in enumerate(value.shape)
                    if isinstance(s, torch.SymInt) and not _expr(s).is_number
                }
            dynamic_shapes.append(dims or None)
        elif isinstance(arg, int | torch.SymInt) and not isinstance(arg, bool):
            where = symbols.get(_expr(meta_value(node)))
            if where is not None and where[1] is not None:
                deferred_sizes.append((mine, *where))
            else:
                specialized[i] = int(arg)
                _substitute(mine, int(arg))
                copy.graph.erase_node(mine)
        else:  # other Python values dynamo passes (rare): bake in and key on them
            specialized[i] = arg
            _substitute(mine, arg)
            copy.graph.erase_node(mine)
    for mine, source, dim in deferred_sizes:
        if source not in feeds:
            raise ExportError(f"a size is read from input {source}, which is not a tensor input")
        copy.size_of(mine, copy.map[nodes[source]], dim)

    leaves, out_spec = pytree.tree_flatten(copy.out)
    original_leaves = pytree.tree_leaves(
        gm.graph.output_node().args[0] if gm.graph.output_node() is not None else ()
    )
    outputs: list[Output] = []
    onnx_nodes: list[torch.fx.Node] = []
    arg_of = {copy.map[n]: i for i, n in enumerate(nodes) if n in copy.map}
    for leaf, original in zip(leaves, original_leaves):
        if not isinstance(leaf, torch.fx.Node):
            outputs.append(Output("const", value=leaf))
            continue
        if isinstance(original, torch.fx.Node) and original.op == "placeholder":
            outputs.append(Output("arg", index=nodes.index(original)))
            continue
        value = meta_value(original) if isinstance(original, torch.fx.Node) else None
        if isinstance(value, torch.SymInt | int) and not isinstance(value, bool):
            expr = _expr(value)
            free = getattr(expr, "free_symbols", set())
            if free - set(symbols):
                raise ExportError(f"an output size depends on data ({expr})")
            outputs.append(Output("size", value=expr))
            continue
        if not isinstance(value, torch.Tensor):
            raise ExportError(f"output {leaf.name} is a {type(value).__name__}, not a tensor")
        if leaf not in onnx_nodes:
            onnx_nodes.append(leaf)
        outputs.append(Output("onnx", index=onnx_nodes.index(leaf)))
    del arg_of
    mutation_outputs = [copy.map[nodes[i]] for i in mutated if nodes[i] in copy.map]
    module = copy.module(onnx_nodes + mutation_outputs)
    feed_args = tuple(args[i] for i in feeds)
    ds = tuple(dynamic_shapes) if any(d is not None for d in dynamic_shapes) else None
    with quiet_export():
        program = torch.export.export(module, feed_args, dynamic_shapes=ds, strict=False)
        program = decompose_for_onnx(program)
        onnx_program = _to_onnx(program, onnx_optimize)
    # torch.export keeps in-place ops; the exporter's decomposition functionalizes them into
    # mutation outputs, which it then leaves out of the ONNX model: find them there.
    mutated_frozen, mutated_inputs = _mutations(onnx_program.exported_program, feeds)
    mutated_inputs = [i for i in mutated_inputs if i not in mutated]
    if mutated_frozen or mutated_inputs:
        return None, mutated_frozen, mutated_inputs
    model = onnx_program.model_proto
    expected = len(onnx_nodes) + len(mutation_outputs)
    if len(model.graph.output) != expected:
        raise ExportError(
            f"the ONNX model has {len(model.graph.output)} outputs, expected {expected}"
        )
    if len(model.graph.input) != len(feeds):
        raise ExportError(
            f"the ONNX model has {len(model.graph.input)} inputs, expected {len(feeds)}"
        )
    mutations = tuple((len(onnx_nodes) + k, nodes.index(n)) for k, n in enumerate(
        nodes[i] for i in mutated if nodes[i] in copy.map
    ))  # fmt: skip
    result = ExportedGraph(
        model=model,
        feeds=tuple(feeds),
        input_dims=tuple(_dims(vi) for vi in model.graph.input),
        outputs=tuple(outputs),
        out_spec=out_spec,
        mutations=mutations,
        frozen=tuple(baked),
        specialized=specialized,
        symbols=symbols,
    )
    return result, [], []


def _mutations(program, feeds: Sequence[int]) -> tuple[list[int], list[int]]:
    """Argument indices of the frozen buffers and of the inputs the program updates."""
    sig = program.graph_signature
    frozen = [
        int(name.rsplit("_", 1)[1])
        for name in sig.buffers_to_mutate.values()
        if name.startswith("_graphopt_frozen_")
    ]
    user_inputs = list(sig.user_inputs)
    inputs = [feeds[user_inputs.index(name)] for name in sig.user_inputs_to_mutate.values()]
    return frozen, inputs


def _dims(value_info: onnx.ValueInfoProto) -> tuple[int | None, ...]:
    shape = value_info.type.tensor_type.shape
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in shape.dim)
