"""Tests for optimizer.onnx_io.wire: lazy loading, streaming saves and malformed input."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import load_external_data_for_model

from optimizer.errors import ModelLoadError, UnsafeExternalDataError, UnsupportedModelError
from optimizer.onnx_io import wire
from optimizer.onnx_io.wire import (
    load_model_lazy,
    materialize,
    read_tensor_bytes,
    resolve_external_location,
    save_model_streaming,
)

REPO = Path(__file__).resolve().parents[2]


def _make_model(rng: np.random.Generator | None = None) -> onnx.ModelProto:
    """A small model touching most ModelProto/GraphProto features, with big and tiny weights."""
    rng = rng or np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(128).astype(np.float32), "b1")  # 512 B
    w16 = numpy_helper.from_array(rng.standard_normal((40, 40)).astype(np.float16), "w16")
    ids = numpy_helper.from_array(rng.integers(-(2**40), 2**40, 300, dtype=np.int64), "ids")
    small = numpy_helper.from_array(np.arange(4, dtype=np.int64), "small")
    # Typed-field payload (float_data, not raw_data) larger than the lazy threshold.
    typed = helper.make_tensor("typed", TensorProto.FLOAT, [600], rng.random(600).tolist())
    const = numpy_helper.from_array(rng.standard_normal(128).astype(np.float32), "c")
    then_g = helper.make_graph(
        [helper.make_node("Identity", ["h3"], ["t_out"])],
        "then",
        [],
        [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [2, 128])],
    )
    else_g = helper.make_graph(
        [helper.make_node("Neg", ["h3"], ["e_out"])],
        "else",
        [],
        [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [2, 128])],
    )
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h1"], name="mm"),
        helper.make_node("Add", ["h1", "b1"], ["h2"]),
        helper.make_node("Constant", [], ["cst"], value=const),
        helper.make_node("Mul", ["h2", "cst"], ["h3"], doc_string="scale"),
        helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 64]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 128])],
        [w1, b1, w16, ids, small, typed],
        doc_string="graph doc",
        value_info=[helper.make_tensor_value_info("h1", TensorProto.FLOAT, [2, 128])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
        producer_name="test",
        doc_string="model doc",
    )
    helper.set_model_props(model, {"author": "me", "purpose": "tests"})
    return model


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "src" / "model.onnx"
    path.parent.mkdir()
    onnx.save(_make_model(), path)
    return path


def _normalized(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx's external-data loader sets data_location=DEFAULT explicitly; drop that."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for tensor in model.graph.initializer:
        if tensor.data_location == TensorProto.DEFAULT:
            tensor.ClearField("data_location")
    return model


def _ext(tensor: TensorProto) -> dict[str, str]:
    return {e.key: e.value for e in tensor.external_data}


# --- load_model_lazy -------------------------------------------------------------------


def test_lazy_load_references_payloads_in_the_file(model_file: Path) -> None:
    data = model_file.read_bytes()
    original = onnx.load(model_file)
    skeleton = load_model_lazy(model_file)
    lazy = {t.name for t in skeleton.graph.initializer if t.data_location == TensorProto.EXTERNAL}
    assert lazy == {"w1", "w16", "ids"}  # raw_data > 1024 bytes; b1 (512 B) stays inline
    for tensor, orig in zip(skeleton.graph.initializer, original.graph.initializer, strict=True):
        if tensor.name in lazy:
            info = _ext(tensor)
            assert info["location"] == "model.onnx"
            offset, length = int(info["offset"]), int(info["length"])
            assert data[offset : offset + length] == orig.raw_data
            assert not tensor.HasField("raw_data")
        else:
            assert tensor == orig
    assert skeleton.ByteSize() < len(data) // 4
    # Everything outside the initializers is parsed as usual.
    assert skeleton.graph.node == original.graph.node
    assert skeleton.metadata_props == original.metadata_props
    assert skeleton.opset_import == original.opset_import


def test_onnx_external_data_helper_resolves_self_references(model_file: Path) -> None:
    skeleton = load_model_lazy(model_file)
    load_external_data_for_model(skeleton, str(model_file.parent))
    assert _normalized(skeleton) == onnx.load(model_file)


def test_materialize_equals_onnx_load(model_file: Path) -> None:
    skeleton = load_model_lazy(model_file)
    assert materialize(skeleton, model_file.parent) == onnx.load(model_file)
    # The skeleton itself is not modified.
    assert skeleton.graph.initializer[0].data_location == TensorProto.EXTERNAL


def test_real_external_data_is_left_alone_then_materialized(tmp_path: Path) -> None:
    path = tmp_path / "ext.onnx"
    onnx.save(_make_model(), path, save_as_external_data=True, location="w.bin")
    skeleton = load_model_lazy(path)
    assert _ext(skeleton.graph.initializer[0])["location"] == "w.bin"
    assert _normalized(materialize(skeleton, tmp_path)) == _normalized(onnx.load(path))


def test_read_tensor_bytes(model_file: Path) -> None:
    original = onnx.load(model_file)
    skeleton = load_model_lazy(model_file)
    w1, b1 = skeleton.graph.initializer[0], skeleton.graph.initializer[1]
    mapped = read_tensor_bytes(w1, model_file.parent)
    assert isinstance(mapped, np.memmap)
    assert mapped.dtype == np.uint8
    assert mapped.tobytes() == original.graph.initializer[0].raw_data
    assert isinstance(read_tensor_bytes(b1, None), memoryview)
    assert bytes(read_tensor_bytes(b1, None)) == b1.raw_data
    typed = skeleton.graph.initializer[5]
    expected = numpy_helper.to_array(typed).astype("<f4").tobytes()
    assert bytes(read_tensor_bytes(typed, None)) == expected
    # Missing offset means 0, missing length means "to the end of the file".
    blob = model_file.parent / "blob.bin"
    blob.write_bytes(b"abcdefgh")
    ref = TensorProto(name="r", data_type=TensorProto.UINT8, data_location=TensorProto.EXTERNAL)
    ref.external_data.add(key="location", value="blob.bin")
    assert bytes(read_tensor_bytes(ref, blob.parent)) == b"abcdefgh"
    ref.external_data.add(key="offset", value="3")
    assert bytes(read_tensor_bytes(ref, blob.parent)) == b"defgh"
    ref.external_data.add(key="length", value="9")
    with pytest.raises(ModelLoadError, match="past end"):
        read_tensor_bytes(ref, blob.parent)


# --- save_model_streaming --------------------------------------------------------------


def test_save_single_file_round_trip(model_file: Path, tmp_path: Path) -> None:
    skeleton = load_model_lazy(model_file)
    out = tmp_path / "out" / "model.onnx"
    out.parent.mkdir()
    save_model_streaming(skeleton, out, base_dir=model_file.parent)
    assert sorted(os.listdir(out.parent)) == ["model.onnx"]  # no .data, no temp files
    assert onnx.load(out) == onnx.load(model_file)
    onnx.checker.check_model(str(out))
    assert out.stat().st_size == model_file.stat().st_size
    # Our own output can be loaded lazily again.
    assert materialize(load_model_lazy(out), out.parent) == onnx.load(model_file)


def test_save_external_data_round_trip(model_file: Path, tmp_path: Path) -> None:
    skeleton = load_model_lazy(model_file)
    out = tmp_path / "model.onnx"
    save_model_streaming(skeleton, out, base_dir=model_file.parent, external_data=True)
    assert sorted(os.listdir(tmp_path)) == ["model.onnx", "model.onnx.data", "src"]
    onnx.checker.check_model(str(out))
    proto = onnx.load(out, load_external_data=False)
    external = [t for t in proto.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert [t.name for t in external] == ["w1", "w16", "ids"]
    for tensor in external:
        assert _ext(tensor)["location"] == "model.onnx.data"
        assert int(_ext(tensor)["offset"]) % 4096 == 0
    assert _normalized(onnx.load(out)) == onnx.load(model_file)


def test_in_memory_model_saves_large_raw_data_externally(tmp_path: Path) -> None:
    model = _make_model()
    save_model_streaming(model, tmp_path / "m.onnx", base_dir=None, external_data=True)
    assert (tmp_path / "m.onnx.data").stat().st_size > 64 * 128 * 4
    assert _normalized(onnx.load(tmp_path / "m.onnx")) == model


def test_auto_mode_switches_to_external_data_over_limit(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    skeleton = load_model_lazy(model_file)
    save_model_streaming(skeleton, tmp_path / "a.onnx", base_dir=model_file.parent)
    assert not (tmp_path / "a.onnx.data").exists()
    monkeypatch.setattr(wire, "_AUTO_EXTERNAL", 10_000)
    save_model_streaming(skeleton, tmp_path / "b.onnx", base_dir=model_file.parent)
    assert (tmp_path / "b.onnx.data").exists()


def test_single_file_over_protobuf_limit_is_refused(
    model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "_PROTOBUF_LIMIT", 10_000)
    before = model_file.read_bytes()
    with pytest.raises(UnsupportedModelError, match="2 GiB"):
        save_model_streaming(
            load_model_lazy(model_file), model_file, base_dir=model_file.parent, external_data=False
        )
    assert model_file.read_bytes() == before


def test_onnxruntime_runs_streamed_outputs(model_file: Path, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    skeleton = load_model_lazy(model_file)
    save_model_streaming(skeleton, tmp_path / "one.onnx", base_dir=model_file.parent)
    save_model_streaming(
        skeleton, tmp_path / "two.onnx", base_dir=model_file.parent, external_data=True
    )
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the unused initializers are intentional
    feeds = {"x": np.random.default_rng(2).standard_normal((2, 64)).astype(np.float32)}
    for cond in (True, False):
        feeds["cond"] = np.array(cond)
        outputs = [
            ort.InferenceSession(str(p), options).run(None, feeds)[0]
            for p in (model_file, tmp_path / "one.onnx", tmp_path / "two.onnx")
        ]
        np.testing.assert_array_equal(outputs[1], outputs[0])
        np.testing.assert_array_equal(outputs[2], outputs[0])


def test_saved_file_modes(model_file: Path, tmp_path: Path) -> None:
    skeleton = load_model_lazy(model_file)
    out = tmp_path / "o.onnx"
    save_model_streaming(skeleton, out, base_dir=model_file.parent)
    assert out.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    out.chmod(0o640)
    save_model_streaming(skeleton, out, base_dir=model_file.parent)
    assert out.stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("external", [False, True])
def test_save_in_place(model_file: Path, external: bool) -> None:
    expected = onnx.load(model_file)
    skeleton = load_model_lazy(model_file)
    save_model_streaming(skeleton, model_file, base_dir=model_file.parent, external_data=external)
    assert _normalized(onnx.load(model_file)) == expected
    # Again, now reading from the .data file that is itself being replaced.
    save_model_streaming(
        load_model_lazy(model_file), model_file, base_dir=model_file.parent, external_data=external
    )
    assert _normalized(onnx.load(model_file)) == expected
    assert not [n for n in os.listdir(model_file.parent) if n.endswith(".tmp")]


def test_failed_save_leaves_destination_untouched(
    model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = model_file.read_bytes()
    skeleton = load_model_lazy(model_file)

    def broken_copy(self: object, region: object, out: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(wire._Copier, "copy", broken_copy)
    for external in (False, True):
        with pytest.raises(OSError, match="disk full"):
            save_model_streaming(
                skeleton, model_file, base_dir=model_file.parent, external_data=external
            )
        assert model_file.read_bytes() == before
        assert sorted(os.listdir(model_file.parent)) == ["model.onnx"]


def test_save_with_missing_source_raises_model_load_error(model_file: Path, tmp_path: Path) -> None:
    skeleton = load_model_lazy(model_file)
    model_file.unlink()
    with pytest.raises(ModelLoadError, match="cannot read"):
        save_model_streaming(skeleton, tmp_path / "o.onnx", base_dir=model_file.parent)
    assert not (tmp_path / "o.onnx").exists()


# --- external locations ----------------------------------------------------------------


def test_resolve_external_location(tmp_path: Path) -> None:
    base = tmp_path / "base"
    (base / "sub").mkdir(parents=True)
    (tmp_path / "secret").write_bytes(b"x")
    (base / "link").symlink_to(tmp_path / "secret")
    (base / "inner").symlink_to(base / "sub")
    assert resolve_external_location(base, "w.bin") == base.resolve() / "w.bin"
    assert resolve_external_location(base, "sub/../w.bin") == base.resolve() / "w.bin"
    assert resolve_external_location(base, "inner/w.bin") == base.resolve() / "sub" / "w.bin"
    for bad in ["../secret", "sub/../../secret", "/etc/passwd", "\\\\host\\x", "C:x", "link", ""]:
        with pytest.raises(UnsafeExternalDataError):
            resolve_external_location(base, bad)


def test_escaping_locations_are_refused_by_readers(model_file: Path, tmp_path: Path) -> None:
    (model_file.parent.parent / "outside.bin").write_bytes(bytes(range(16)))
    model = load_model_lazy(model_file)
    tensor = model.graph.initializer[0]
    for location in ["../outside.bin", str(model_file.parent.parent / "outside.bin")]:
        tensor.external_data[0].value = location
        with pytest.raises(UnsafeExternalDataError):
            materialize(model, model_file.parent)
        with pytest.raises(UnsafeExternalDataError):
            save_model_streaming(model, tmp_path / "o.onnx", base_dir=model_file.parent)
        with pytest.raises(UnsafeExternalDataError):
            read_tensor_bytes(tensor, model_file.parent)
    assert not (tmp_path / "o.onnx").exists()


def test_absolute_locations_only_when_allowed(model_file: Path, tmp_path: Path) -> None:
    model = load_model_lazy(model_file)
    for tensor in model.graph.initializer:
        if tensor.external_data:
            tensor.external_data[0].value = str(model_file)
    out = tmp_path / "o.onnx"
    save_model_streaming(model, out, base_dir=None, allow_absolute=True)
    assert onnx.load(out) == onnx.load(model_file)
    assert materialize(model, None, allow_absolute=True) == onnx.load(model_file)


# --- malformed input -------------------------------------------------------------------


def _assert_load_error(path: Path, match: str) -> None:
    with pytest.raises(ModelLoadError, match=match) as info:
        load_model_lazy(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message


def test_malformed_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = _make_model().SerializeToString()
    path = tmp_path / "bad.onnx"
    _assert_load_error(path, "No such file")
    _assert_load_error(tmp_path, "is a directory")
    path.write_bytes(b"")
    _assert_load_error(path, "empty file")
    path.write_bytes(good[:1000])
    _assert_load_error(path, r"truncated protobuf at byte \d+")
    path.write_bytes(b"\x3a\xff\xff\xff\x0f")  # graph field claiming ~4 GB
    _assert_load_error(path, "truncated protobuf at byte 5")
    path.write_bytes(b"\x38\x01")  # graph field (7) as a varint
    _assert_load_error(path, "field 7 has wire type 0")
    path.write_bytes(b"\x0b\x0c")  # a group: wire type 3
    _assert_load_error(path, "unsupported wire type 3")
    path.write_bytes(b"\x12\x03abc")  # a valid protobuf: just producer_name
    _assert_load_error(path, "not an ONNX model")
    path.write_bytes(b"\x08" + b"\xff" * 11)
    _assert_load_error(path, "varint too long")

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    path.write_bytes(good)
    monkeypatch.setattr(wire, "open", denied, raising=False)
    _assert_load_error(path, "Permission denied")


_FUZZ_MODEL = _make_model().SerializeToString()
_FUZZ_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,  # keep no example database in the work tree
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def fuzz_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "fuzz.onnx"


def _load_consistently(path: Path, data: bytes) -> None:
    """Either ModelLoadError, or the skeleton agrees with protobuf's own full parse."""
    path.write_bytes(data)
    try:
        skeleton = load_model_lazy(path, min_lazy_bytes=16)
    except ModelLoadError as exc:
        message = str(exc)
    else:
        message = ""
    if message:
        assert str(path) in message
        assert "\n" not in message
        return
    full = onnx.ModelProto.FromString(data)
    pairs = zip(skeleton.graph.initializer, full.graph.initializer, strict=True)
    for lazy, orig in pairs:
        if lazy.data_location == TensorProto.EXTERNAL and orig.data_location != lazy.data_location:
            info = _ext(lazy)
            offset, length = int(info["offset"]), int(info["length"])
            assert info["location"] == path.name
            assert data[offset : offset + length] == orig.raw_data
            lazy.ClearField("data_location")
            del lazy.external_data[:]
            orig.ClearField("data_location")
            orig.ClearField("raw_data")
    assert skeleton == full


@_FUZZ_SETTINGS
@given(data=st.binary(max_size=300))
def test_fuzz_random_bytes(fuzz_path: Path, data: bytes) -> None:
    _load_consistently(fuzz_path, data)


@_FUZZ_SETTINGS
@given(cut=st.integers(0, len(_FUZZ_MODEL)))
def test_fuzz_truncated(fuzz_path: Path, cut: int) -> None:
    _load_consistently(fuzz_path, _FUZZ_MODEL[:cut])


@_FUZZ_SETTINGS
@given(
    flips=st.lists(st.tuples(st.integers(0, len(_FUZZ_MODEL) - 1), st.integers(0, 7)), max_size=4),
    splice=st.tuples(st.integers(0, len(_FUZZ_MODEL)), st.binary(max_size=8)),
)
def test_fuzz_bit_flips(
    fuzz_path: Path, flips: list[tuple[int, int]], splice: tuple[int, bytes]
) -> None:
    data = bytearray(_FUZZ_MODEL)
    for pos, bit in flips:
        data[pos] ^= 1 << bit
    at, junk = splice
    data[at : at + len(junk)] = junk
    _load_consistently(fuzz_path, bytes(data))


# --- memory ----------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux /proc")
def test_peak_memory_stays_far_below_model_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    tensors = [
        numpy_helper.from_array(rng.random(12_500_000, dtype=np.float32), f"w{i}") for i in range(4)
    ]
    graph = helper.make_graph(
        [helper.make_node("Sum", [t.name for t in tensors], ["y"])],
        "big",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [12_500_000])],
        tensors,
    )
    src = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph), src)
    del tensors, graph
    size = src.stat().st_size
    assert size > 190_000_000
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so the child
    # would report this (large) pytest process's peak. Baseline is the current VmRSS.
    script = textwrap.dedent(
        f"""
        def kib(key):
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith(key))
        from optimizer.onnx_io import wire
        base = kib("VmRSS:")
        skeleton = wire.load_model_lazy({str(src)!r})
        wire.save_model_streaming(skeleton, {str(tmp_path / "one.onnx")!r},
                                  base_dir={str(tmp_path)!r}, external_data=False)
        wire.save_model_streaming(skeleton, {str(tmp_path / "two.onnx")!r},
                                  base_dir={str(tmp_path)!r}, external_data=True)
        print(kib("VmHWM:") - base)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    growth = int(result.stdout.strip()) * 1024
    # Streaming holds one 16 MiB copy buffer; a copy of even one 50 MB tensor would fail this.
    assert growth < 0.2 * size, f"RSS grew by {growth / 1e6:.0f} MB for a {size / 1e6:.0f} MB model"
    source = load_model_lazy(src)
    for name in ("one.onnx", "two.onnx"):
        copy = load_model_lazy(tmp_path / name)
        for a, b in zip(source.graph.initializer, copy.graph.initializer, strict=True):
            assert a.name == b.name
            assert a.dims == b.dims
            assert np.array_equal(read_tensor_bytes(a, tmp_path), read_tensor_bytes(b, tmp_path))
