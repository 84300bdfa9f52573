"""Property-based tests (hypothesis) on random small ONNX graphs and on corrupted model files.

- import -> export of a random graph passes the ONNX checker and computes the same outputs;
- ``optimizer.optimize`` computes the same outputs and never grows the graph;
- the importer, fed random bytes, truncated models or models with flipped bits, either
  succeeds or raises a :class:`~optimizer.errors.GraphoptError`, never another exception;
- the ``graphopt`` script on such files never prints a traceback: exit 0, or exit 2 with one
  ``graphopt: error:`` line.

Examples are derandomized (the same every run), so a failure found once is found every time.
The random graphs come from :func:`models.small_models`.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import itertools
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

import models
import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import optimizer
from optimizer import onnx_io
from optimizer.errors import GraphoptError
from optimizer.examples import example_model
from optimizer.ir import check_graph

# hypothesis imports libcst to explain failures, which warns on import
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict:DeprecationWarning")

PROPERTY = settings(
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # no "explain" phase: it is slow and says little about C-backed code
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
)


def examples(n: int, *, shrink: bool = True) -> settings:
    """:data:`PROPERTY` with ``n`` examples; ``shrink=False`` reports failures unshrunk.

    The fuzzers do not shrink: shrinking corrupted bytes takes minutes and the smallest
    corrupted file is no more telling than the first one found.
    """
    phases = PROPERTY.phases if shrink else (Phase.explicit, Phase.reuse, Phase.generate)
    return settings(PROPERTY, max_examples=n, phases=phases)


def _assert_same_outputs(want: list, got: list, rtol: float, atol: float) -> None:
    assert len(want) == len(got)
    for a, b in zip(want, got, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------------
# random valid graphs
# ------------------------------------------------------------------------------------------


@examples(150)
@given(model=models.small_models(), batch=st.integers(1, 3))
def test_round_trip_preserves_outputs(model, batch):
    before = model.SerializeToString()
    graph, _ = onnx_io.import_model(model)
    graph.check()
    exported = onnx_io.to_proto(graph)
    assert model.SerializeToString() == before, "import mutated the ModelProto"
    onnx.checker.check_model(exported, full_check=True)
    assert [i.name for i in exported.graph.input] == [i.name for i in model.graph.input]
    assert [o.name for o in exported.graph.output] == [o.name for o in model.graph.output]
    feed = models.fixed_feed(model, batch=batch)
    _assert_same_outputs(models.run_ort(model, feed), models.run_ort(exported, feed), 1e-6, 1e-6)


@examples(150)
@given(model=models.small_models(), batch=st.integers(1, 3))
def test_optimize_preserves_outputs(model, batch):
    before = model.SerializeToString()
    result = optimizer.optimize(model)
    assert model.SerializeToString() == before, "optimize mutated the ModelProto"
    onnx.checker.check_model(result, full_check=True)
    assert len(result.graph.node) <= len(model.graph.node)
    outputs = {o.name for o in result.graph.output}
    for node in result.graph.node:  # an Identity may only remain to name a graph output
        if node.op_type in ("Identity", "Dropout"):
            assert node.op_type == "Identity" and node.output[0] in outputs, node
    assert [o.name for o in result.graph.output] == [o.name for o in model.graph.output]
    feed = models.fixed_feed(model, batch=batch, seed=batch)
    _assert_same_outputs(models.run_ort(model, feed), models.run_ort(result, feed), 1e-4, 1e-5)


@examples(50)
@given(model=models.small_models())
def test_optimize_reaches_a_fixed_point(model):
    once = optimizer.optimize(model, check=False)
    twice = optimizer.optimize(once, check=False)
    assert len(twice.graph.node) == len(once.graph.node)


# ------------------------------------------------------------------------------------------
# lazily loaded weights belong to their own file
# ------------------------------------------------------------------------------------------


def _initializers(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_equal_weights_are_read_from_their_own_file(tmp_path):
    """Two files with equal weights: exporting the second reads the second file.

    Constants are hash-consed by content, and a lazily loaded weight remembers the file it
    came from. If importing ``b`` returns the constant interned while ``a`` was imported,
    ``b``'s weights are streamed from ``a``'s file, which may have changed since.
    """
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    onnx.save(example_model(), tmp_path / "a" / "m.onnx")
    onnx.save(example_model(), tmp_path / "b" / "m.onnx")
    first, _ = onnx_io.load(tmp_path / "a" / "m.onnx")  # alive while b is imported
    onnx.save(example_model(seed=5), tmp_path / "a" / "m.onnx")  # same layout, other weights
    second, _ = onnx_io.load(tmp_path / "b" / "m.onnx")
    onnx_io.save(second, tmp_path / "out.onnx")
    del first, second  # no graph may outlive this test, even when it fails
    gc.collect()
    written = _initializers(onnx.load(tmp_path / "out.onnx"))
    wrong = [
        name
        for name, want in _initializers(example_model()).items()
        if name in written and not np.array_equal(written[name], want)
    ]
    assert not wrong, f"weights of b written with a's new values: {wrong}"


def test_weights_of_a_deleted_twin_file_are_not_needed(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    onnx.save(example_model(), tmp_path / "a" / "m.onnx")
    onnx.save(example_model(), tmp_path / "b" / "m.onnx")
    first, _ = onnx_io.load(tmp_path / "a" / "m.onnx")
    shutil.rmtree(tmp_path / "a")
    second, _ = onnx_io.load(tmp_path / "b" / "m.onnx")
    try:
        onnx_io.save(second, tmp_path / "out.onnx")  # must not need a/m.onnx
        error = None
    except GraphoptError as exc:
        error = str(exc)
    del first, second  # no graph may outlive this test, even when it fails
    gc.collect()
    assert error is None, error
    onnx.checker.check_model(onnx.load(tmp_path / "out.onnx"))


def test_optimizing_twin_files_in_place_one_after_the_other(tmp_path):
    """The user-visible face of the two tests above: a batch job over a folder.

    Two files hold the same model (say, copies). Optimizing the first in place rewrites
    it; optimizing the second must then read the second, not the rewritten first.
    """
    for name in ("a.onnx", "b.onnx"):
        onnx.save(example_model(), tmp_path / name)
    optimizer.optimize_file(tmp_path / "a.onnx", in_place=True)
    try:
        optimizer.optimize_file(tmp_path / "b.onnx", in_place=True)
        error = None
    except GraphoptError as exc:
        error = f"{type(exc).__name__}: {exc}"
    gc.collect()
    assert error is None, error
    feed = models.fixed_feed(example_model())
    want = models.run_ort(example_model(), feed)
    for name in ("a.onnx", "b.onnx"):
        _assert_same_outputs(want, models.run_ort(tmp_path / name, feed), 1e-4, 1e-5)


# ------------------------------------------------------------------------------------------
# corrupted files: the importer
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


_SERIAL = itertools.count()


def _load_bytes(folder: Path, data: bytes) -> None:
    """Write ``data`` to a file and load it: success or GraphoptError, nothing else.

    What imports must be a sound IR graph (``check_graph``) and export again (or be refused
    with a GraphoptError there): an import that lets a broken model through only moves the
    crash to a later stage. Failures are reported as text, so that no traceback keeps a
    half-imported graph alive after the test (interned constants outlive their test while
    anything references them; see test_equal_weights_are_read_from_their_own_file).
    """
    # A fresh name per example, for the same reason: no file that holds the weights of an
    # earlier graph is ever overwritten.
    path = folder / f"fuzzed-{next(_SERIAL)}.onnx"
    path.write_bytes(data)
    failure = _import_and_export(path)
    if failure is not None:
        pytest.fail(failure, pytrace=False)


def _import_and_export(path: Path) -> str | None:
    try:
        graph, _ = onnx_io.load(path)
        problems = check_graph(graph)
        if problems:
            return "the imported graph breaks IR invariants: " + "; ".join(problems[:5])
        with contextlib.suppress(GraphoptError):
            onnx_io.to_proto(graph)
    except GraphoptError:
        return None
    except Exception:  # noqa: BLE001 - the finding: anything but a GraphoptError
        return traceback.format_exc()
    return None


@st.composite
def truncated(draw):
    data = draw(models.small_models()).SerializeToString()
    return data[: draw(st.integers(0, len(data) - 1))]


@st.composite
def bit_flipped(draw):
    data = bytearray(draw(models.small_models()).SerializeToString())
    bit = draw(st.integers(0, 8 * len(data) - 1))
    data[bit // 8] ^= 1 << (bit % 8)
    return bytes(data)


@st.composite
def overwritten(draw):
    data = bytearray(draw(models.small_models()).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@examples(200, shrink=False)
@given(data=st.binary(max_size=400))
def test_importer_on_random_bytes(fuzz_dir, data):
    _load_bytes(fuzz_dir, data)


@examples(200, shrink=False)
@given(data=truncated())
def test_importer_on_truncated_models(fuzz_dir, data):
    _load_bytes(fuzz_dir, data)


@examples(500, shrink=False)
@given(data=bit_flipped())
def test_importer_on_bit_flips(fuzz_dir, data):
    _load_bytes(fuzz_dir, data)


@examples(300, shrink=False)
@given(data=overwritten())
def test_importer_on_overwritten_bytes(fuzz_dir, data):
    _load_bytes(fuzz_dir, data)


@functools.cache
def _example_bytes() -> bytes:
    """The built-in example: ~100 KB, weights big enough to be read lazily from the file."""
    return example_model().SerializeToString()


_EXAMPLE_SIZE = len(example_model().SerializeToString())


@examples(200, shrink=False)
@given(
    cut=st.one_of(st.none(), st.integers(0, _EXAMPLE_SIZE - 1)),
    bits=st.lists(st.integers(0, 8 * _EXAMPLE_SIZE - 1), min_size=1, max_size=3),
)
def test_importer_on_corrupted_example_with_lazy_weights(fuzz_dir, cut, bits):
    """The example truncated at ``cut``, or else with ``bits`` flipped (drawn as positions,
    not bytes, so that a failure report stays readable)."""
    data = bytearray(_example_bytes())
    if cut is not None:
        data = data[:cut]
    else:
        for bit in bits:
            data[bit // 8] ^= 1 << (bit % 8)
    _load_bytes(fuzz_dir, bytes(data))


# Corruptions the fuzzers above found, written out so that they fail deterministically.


def _model(nodes, initializers=(), dims=(4,)) -> onnx.ModelProto:
    """x: float[dims] -> NODES -> y: float[dims]."""
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(dims))],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _weight(dims, data_type=TensorProto.FLOAT, raw: bytes | None = None, name="w"):
    tensor = TensorProto()
    tensor.name, tensor.data_type = name, data_type
    tensor.dims.extend(dims)
    tensor.raw_data = raw if raw is not None else np.ones(dims, np.float32).tobytes()
    return tensor


def _float_data(name: str, dims, values) -> onnx.TensorProto:
    tensor = TensorProto()
    tensor.name, tensor.data_type = name, TensorProto.FLOAT
    tensor.dims.extend(dims)
    tensor.float_data.extend(values)
    return tensor


def _add_weight(weight, dims=None) -> bytes:
    """y = x + w, with x shaped like w (or ``dims`` when w's dims are what is corrupted)."""
    nodes = [helper.make_node("Add", ["x", weight.name], ["y"])]
    return _model(nodes, [weight], dims or tuple(weight.dims)).SerializeToString()


def _with_constant(**attrs) -> bytes:
    nodes = [
        helper.make_node("Constant", [], ["c"], **attrs),
        helper.make_node("Add", ["x", "c"], ["y"]),
    ]
    return _model(nodes).SerializeToString()


def _relu_chain(value_info=None, output_type=None, output_dims=(4,)) -> bytes:
    """x -> Relu -> mid -> Relu -> y, with a (corrupted) annotation of ``mid`` or ``y``."""
    nodes = [helper.make_node("Relu", ["x"], ["mid"]), helper.make_node("Relu", ["mid"], ["y"])]
    model = _model(nodes)
    if value_info is not None:
        model.graph.value_info.append(value_info)
    out = model.graph.output[0].type.tensor_type
    if output_type is not None:
        out.elem_type = output_type
    for dim, value in zip(out.shape.dim, output_dims, strict=False):
        dim.dim_value = value
    return model.SerializeToString()


def _bad_utf8(model: onnx.ModelProto, name: str) -> bytes:
    """The model with the first byte of every occurrence of ``name`` made invalid UTF-8."""
    data = model.SerializeToString()
    assert name.encode() in data
    return data.replace(name.encode(), b"\xff" + name.encode()[1:])


CORRUPT = {
    # a flipped bit in an attribute name: "value" -> "valuu"
    "constant-unknown-attribute": lambda: _with_constant(valuu=numpy_helper.from_array(
        np.ones(4, np.float32))),
    # a flipped wire type: value_floats carried as ints
    "constant-wrong-attribute-type": lambda: _with_constant(value_floats=[1, 2, 3, 4]),
    "tensor-undefined-type": lambda: _add_weight(_weight([4], TensorProto.UNDEFINED)),
    "tensor-raw-data-too-short": lambda: _add_weight(_weight([4], raw=b"\0" * 8)),
    "tensor-raw-data-too-long": lambda: _add_weight(_weight([4], raw=b"\0" * 24)),
    "large-tensor-raw-data-too-short": lambda: _add_weight(_weight([4096], raw=b"\0" * 8000)),
    "float-data-too-short": lambda: _add_weight(_float_data("w", [4], [1.0, 2.0])),
    "large-initializer-name-not-utf8": lambda: _bad_utf8(
        onnx.load_from_string(_add_weight(_weight([2048], name="weight_name"))), "weight_name"
    ),
    "attribute-name-not-utf8": lambda: _bad_utf8(
        _model([helper.make_node("Transpose", ["x"], ["y"], perm=[0])]), "perm"
    ),
    # a flipped bit in a value_info's element type (FLOAT=1 -> UINT8=2) or dimension
    "value-info-wrong-element-type": lambda: _relu_chain(
        helper.make_tensor_value_info("mid", TensorProto.UINT8, [4])),
    "value-info-wrong-shape": lambda: _relu_chain(
        helper.make_tensor_value_info("mid", TensorProto.FLOAT, [5])),
    "output-declared-wrong-element-type": lambda: _relu_chain(output_type=TensorProto.INT8),
    "output-declared-wrong-dim": lambda: _relu_chain(output_dims=(7,)),
    # a flipped bit in a Reshape target: -1 -> -2
    "reshape-target-minus-two": lambda: _model(
        [helper.make_node("Reshape", ["x", "s"], ["y"])],
        [numpy_helper.from_array(np.array([-2], np.int64), "s")],
    ).SerializeToString(),
    # a dropped input name (the length byte of a repeated field flipped)
    "relu-without-input": lambda: _model([
        helper.make_node("Relu", [], ["r"]), helper.make_node("Add", ["x", "r"], ["y"])
    ]).SerializeToString(),
    "matmul-with-one-input": lambda: _model(
        [helper.make_node("MatMul", ["x"], ["y"])]).SerializeToString(),
    "value-name-not-utf8": lambda: _bad_utf8(
        _model([helper.make_node("Relu", ["x"], ["mid"]),
                helper.make_node("Relu", ["mid"], ["y"])]),
        "mid",
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_importer_on_known_corruptions(fuzz_dir, kind):
    _load_bytes(fuzz_dir, CORRUPT[kind]())


@pytest.mark.parametrize(
    "data",
    [
        _add_weight(_weight([4])),
        _add_weight(_weight([4096])),
        _add_weight(_float_data("w", [4], [1.0, 2.0, 3.0, 4.0])),
        _add_weight(_weight([2048], name="weight_name")),
        _with_constant(value=numpy_helper.from_array(np.ones(4, np.float32))),
        _relu_chain(helper.make_tensor_value_info("mid", TensorProto.FLOAT, [4])),
        _model(
            [helper.make_node("Reshape", ["x", "s"], ["y"])],
            [numpy_helper.from_array(np.array([-1], np.int64), "s")],
        ).SerializeToString(),
    ],
    ids=["add", "add-large", "float-data", "named", "constant", "relu-chain", "reshape"],
)
def test_known_corruptions_start_from_sound_models(fuzz_dir, data):
    """Uncorrupted, each builder gives a valid model that imports, checks and runs."""
    model = onnx.load_from_string(data)
    onnx.checker.check_model(model, full_check=True)
    graph, _ = onnx_io.import_model(model)
    graph.check()
    feed = models.fixed_feed(model)
    _assert_same_outputs(
        models.run_ort(model, feed), models.run_ort(onnx_io.to_proto(graph), feed), 0, 0
    )


# ------------------------------------------------------------------------------------------
# corrupted files: the command line
# ------------------------------------------------------------------------------------------


def _graphopt() -> str:
    script = shutil.which("graphopt") or str(Path(sys.executable).with_name("graphopt"))
    assert Path(script).exists(), "the graphopt console script is not installed"
    return script


def _cli_case(folder: Path, data: bytes) -> None:
    for old in folder.iterdir():
        old.unlink()
    (folder / "m.onnx").write_bytes(data)
    env = {k: v for k, v in os.environ.items() if k != "GRAPHOPT_DEBUG"}
    proc = subprocess.run(
        [_graphopt(), "optimize", "m.onnx"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.returncode in (0, 2), (proc.returncode, proc.stderr)
    made = (folder / "m.opt.onnx").exists()
    if proc.returncode == 2:
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("graphopt: error:"), proc.stderr
        assert not made
    else:
        assert made
    assert sorted(p.name for p in folder.iterdir()) == ["m.onnx"] + (["m.opt.onnx"] if made else [])


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli-fuzz")


@examples(15, shrink=False)
@given(data=st.one_of(truncated(), bit_flipped(), overwritten(), st.binary(max_size=64)))
def test_cli_on_fuzzed_files(cli_dir, data):
    _cli_case(cli_dir, data)


@pytest.mark.parametrize("kind", sorted(CORRUPT))
def test_cli_on_known_corruptions(tmp_path, kind):
    """In process (CliRunner), so each case is fast: exit 2 and one line, never 3."""
    from typer.testing import CliRunner

    from optimizer.cli import app

    path = tmp_path / "m.onnx"
    path.write_bytes(CORRUPT[kind]())
    result = CliRunner().invoke(app, ["optimize", str(path)], catch_exceptions=False)
    code, stderr = result.exit_code, result.stderr
    del result  # its exc_info chains to the exception and so to the half-imported graph
    assert code == 2, (code, stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("graphopt: error:"), lines
    assert "internal error" not in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
