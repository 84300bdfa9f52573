"""Tests for optimizer.runtime: sessions, input generation and the equivalence check."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from optimizer import runtime
from optimizer.errors import (
    CheckFailedError,
    CheckUnavailableError,
    GraphoptError,
    ModelLoadError,
    ShapeError,
)
from optimizer.runtime import (
    CHECK_OPTIONS,
    SessionOptionsSpec,
    assert_equivalent,
    available_devices,
    compare_models,
    compare_outputs,
    input_specs,
    make_session,
    parse_input_shapes,
    providers_for,
    random_inputs,
    run,
)

F = TensorProto.FLOAT


def model(nodes, inputs, outputs, initializers=(), opset=17, name="g"):
    """A small model; inputs/outputs are (name, elem_type, shape) triples."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(*i) for i in inputs],
        [helper.make_tensor_value_info(*o) for o in outputs],
        initializer=list(initializers),
    )
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("custom.domain", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8)


def binary(op, shape=(2, 5)):
    """y = op(a, b) on float tensors."""
    io = [("a", F, list(shape)), ("b", F, list(shape))]
    return model([helper.make_node(op, ["a", "b"], ["y"])], io, [("y", F, list(shape))])


def unary(op, elem=F, out_elem=None, shape=(2, 5), **attrs):
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    shape = None if shape is None else list(shape)
    return model([node], [("x", elem, shape)], [("y", out_elem or elem, shape)])


# --------------------------------------------------------------------------- devices, sessions


def test_devices_and_providers_on_cpu_only(monkeypatch):
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert available_devices() == ["cpu"]
    assert providers_for("cpu") == ["CPUExecutionProvider"]
    assert providers_for("auto") == ["CPUExecutionProvider"]
    with pytest.raises(CheckUnavailableError, match="CUDAExecutionProvider"):
        providers_for("cuda")
    with pytest.raises(GraphoptError, match="unknown device 'tpu'"):
        providers_for("tpu")


def test_providers_with_cuda(monkeypatch):
    avail = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: avail)
    assert available_devices() == ["cpu", "cuda"]
    assert providers_for("cuda") == avail
    assert providers_for("auto") == avail
    assert providers_for("cpu") == ["CPUExecutionProvider"]


def test_session_options_spec():
    with pytest.raises(GraphoptError, match="optimization level"):
        SessionOptionsSpec(opt_level="max")
    with pytest.raises(GraphoptError, match="intra_op_threads"):
        SessionOptionsSpec(intra_op_threads=-1)
    assert SessionOptionsSpec().opt_level == "all"
    assert CHECK_OPTIONS.opt_level == "disable"
    so = SessionOptionsSpec(opt_level="basic", intra_op_threads=2, allow_spinning=False).to_ort()
    assert so.graph_optimization_level == runtime.ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert so.intra_op_num_threads == 2
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.log_severity_level == 3


def test_make_session_applies_options():
    sess = make_session(binary("Add"), device="cpu", options=CHECK_OPTIONS)
    level = sess.get_session_options().graph_optimization_level
    assert level == runtime.ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    assert sess.get_providers() == ["CPUExecutionProvider"]


def test_make_session_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        make_session(tmp_path / "nope.onnx")


def test_unknown_op_is_unavailable_and_message_is_one_line():
    bad = model(
        [helper.make_node("Frobnicate", ["x"], ["y"], domain="custom.domain")],
        [("x", F, [2])],
        [("y", F, [2])],
    )
    with pytest.raises(CheckUnavailableError) as info:
        make_session(bad, device="cpu")
    msg = str(info.value)
    assert msg.startswith("onnxruntime cannot load model 'g': ")
    assert "\n" not in msg and "[ONNXRuntimeError]" not in msg
    # As the reference: unavailable. As the candidate only: a failed check.
    with pytest.raises(CheckUnavailableError, match="reference model"):
        compare_models(bad, unary("Identity", shape=[2]))
    report = compare_models(unary("Identity", shape=[2]), bad)
    assert not report.ok
    assert report.summary().startswith("onnxruntime cannot load the candidate model")


def test_candidate_that_fails_at_run_time_is_a_failed_check():
    shape = helper.make_tensor("s", TensorProto.INT64, [2], [3, 3])  # 10 values -> 3x3
    bad = model(
        [helper.make_node("Reshape", ["x", "s"], ["r"]), helper.make_node("Flatten", ["r"], ["y"])],
        [("x", F, [2, 5])],
        [("y", F, None)],
        initializers=[shape],
    )
    report = compare_models(unary("Identity"), bad)
    assert not report.ok and report.outputs == []
    assert "cannot run the candidate model" in report.summary()
    with pytest.raises(CheckFailedError, match="cannot run the candidate"):
        assert_equivalent(unary("Identity"), bad)


# --------------------------------------------------------------------------- inputs


def test_input_specs_types_and_shapes():
    m = model(
        [helper.make_node("Identity", [n], [n + "_o"]) for n in "abcd"],
        [
            ("a", F, ["N", 3, None]),
            ("b", TensorProto.INT64, [4]),
            ("c", TensorProto.BOOL, []),
            ("d", TensorProto.FLOAT16, [2, "T"]),
        ],
        [(n + "_o", t, None) for n, t in zip("abcd", [F, 7, 9, 10], strict=True)],
    )
    specs = input_specs(make_session(m, device="cpu"))
    assert [(s.name, s.dtype, s.shape) for s in specs] == [
        ("a", np.dtype(np.float32), ("N", 3, None)),
        ("b", np.dtype(np.int64), (4,)),
        ("c", np.dtype(bool), ()),
        ("d", np.dtype(np.float16), (2, "T")),
    ]


def test_non_tensor_input_is_unavailable():
    seq = helper.make_tensor_sequence_value_info("s", F, None)
    graph = helper.make_graph(
        [helper.make_node("SequenceLength", ["s"], ["n"])],
        "g",
        [seq],
        [helper.make_tensor_value_info("n", TensorProto.INT64, [])],
    )
    sess = make_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    with pytest.raises(CheckUnavailableError, match=r"input 's'.*seq\(tensor\(float\)\).*not a"):
        input_specs(sess)


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["x:1,3,224,224"], {"x": (1, 3, 224, 224)}),
        (["a:b:2, 3", "y:7"], {"a:b": (2, 3), "y": (7,)}),
        ([], {}),
    ],
)
def test_parse_input_shapes(texts, expected):
    assert parse_input_shapes(texts) == expected


@pytest.mark.parametrize("text", ["x:1,a", "x:", "x:0", "x", ":1,2", "x:1,-2", "x:1,,2"])
def test_parse_input_shapes_rejects(text):
    with pytest.raises(ShapeError) as info:
        parse_input_shapes([text])
    assert repr(text) in str(info.value)


def test_parse_input_shapes_rejects_duplicates():
    with pytest.raises(ShapeError, match="given twice"):
        parse_input_shapes(["x:1", "x:2"])


SPECS = [
    runtime.InputSpec("x", np.dtype(np.float32), ("N", 3, None)),
    runtime.InputSpec("i", np.dtype(np.int64), (6,)),
]


def test_symbolic_dims_take_default_dim():
    assert random_inputs(SPECS)["x"].shape == (1, 3, 1)
    assert random_inputs(SPECS, default_dim=4)["x"].shape == (4, 3, 4)
    assert random_inputs(SPECS, input_shapes={"x": (2, 3, 5)})["x"].shape == (2, 3, 5)


def test_shape_override_wrong_rank():
    with pytest.raises(
        ShapeError, match=r"input 'x': override \(1,3\) has rank 2, model expects rank 3"
    ):
        random_inputs(SPECS, input_shapes={"x": (1, 3)})


def test_shape_override_contradicts_fixed_dim():
    with pytest.raises(ShapeError, match=r"input 'x': override \(1,4,2\) has 4 at axis 1"):
        random_inputs(SPECS, input_shapes={"x": (1, 4, 2)})


def test_shape_override_unknown_name():
    with pytest.raises(ShapeError, match=r"unknown input 'z'.*inputs are: x, i"):
        random_inputs(SPECS, input_shapes={"z": (1,)})


def test_random_inputs_deterministic_and_in_range():
    a, b = random_inputs(SPECS, seed=3), random_inputs(SPECS, seed=3)
    c = random_inputs(SPECS, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["x"], c["x"])
    big = random_inputs(SPECS, input_shapes={"x": (50, 3, 50)})
    assert big["x"].dtype == np.float32 and 0.5 < big["x"].std() < 1.5
    ints = random_inputs([runtime.InputSpec("i", np.dtype(np.int32), (1000,))])["i"]
    assert ints.dtype == np.int32 and set(np.unique(ints)) == {0, 1, 2, 3}


def test_random_inputs_other_dtypes():
    specs = [
        runtime.InputSpec("h", np.dtype(np.float16), (100,)),
        runtime.InputSpec("b", np.dtype(bool), (100,)),
        runtime.InputSpec("s", np.dtype(object), (3, 2)),
        runtime.InputSpec("u", np.dtype(np.uint8), ()),
    ]
    got = random_inputs(specs, seed=1)
    assert got["h"].dtype == np.float16 and np.isfinite(got["h"]).all()
    assert got["b"].dtype == bool and 0 < got["b"].sum() < 100
    assert got["s"].shape == (3, 2)
    assert all(isinstance(w, str) and w.isascii() and 1 <= len(w) <= 8 for w in got["s"].flat)
    assert got["u"].shape == () and got["u"].dtype == np.uint8


def test_unknown_rank_needs_an_override():
    m = unary("Identity", shape=None)
    sess = make_session(m)
    assert input_specs(sess)[0].shape == ()  # ORT cannot tell unknown rank from a scalar
    assert input_specs(sess, model=m)[0].shape is None
    with pytest.raises(CheckUnavailableError, match="unknown rank"):
        compare_models(m, m)
    assert compare_models(m, m, input_shapes={"x": (2, 3)}).inputs_used["x"].shape == (2, 3)


def test_string_inputs_run():
    m = unary("Identity", elem=TensorProto.STRING, shape=[3])
    sess = make_session(m)
    feed = random_inputs(input_specs(sess))
    assert list(run(sess, feed)["y"]) == list(feed["x"])
    assert compare_models(m, m).ok


# --------------------------------------------------------------------------- comparing


def test_equal_models_pass():
    ref = unary("Mul", shape=[4])
    ref.graph.node[0].input.append("x")  # y = x * x
    cand = unary("Pow", shape=[4])
    cand.graph.node[0].input.append("two")
    cand.graph.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), "two"))
    report = assert_equivalent(ref, cand, num_samples=3)
    assert report.ok and [o.name for o in report.outputs] == ["y"]
    assert report.outputs[0].max_abs_err < 1e-5
    assert "1 output(s) match" in report.summary() and "3 sample(s)" in report.summary()


def test_add_replaced_by_sub_fails_with_useful_summary():
    report = compare_models(binary("Add"), binary("Sub"))
    assert not report.ok
    out = report.outputs[0]
    assert not out.ok and out.max_abs_err > 0.1
    summary = report.summary()
    assert summary.startswith("output 'y': max abs err ")
    assert "> atol 1e-04 + rtol 1e-03*|ref| at index (" in summary
    assert "values out of tolerance" in summary
    with pytest.raises(CheckFailedError) as info:
        assert_equivalent(binary("Add"), binary("Sub"))
    assert str(info.value) == summary


def test_tolerances_are_applied():
    eps = numpy_helper.from_array(np.full((2, 5), 1e-5, np.float32), "b")
    cand = model(
        [helper.make_node("Add", ["x", "b"], ["y"])],
        [("x", F, [2, 5])],
        [("y", F, [2, 5])],
        initializers=[eps],
    )
    assert compare_models(unary("Identity"), cand).ok
    report = compare_models(unary("Identity"), cand, atol=0.0, rtol=0.0)
    assert not report.ok and "atol 0 + rtol " in report.summary()
    assert math.isclose(report.outputs[0].max_abs_err, 1e-5, rel_tol=0.1)


def test_tolerance_never_below_two_ulps_of_the_output_type():
    ref = np.array([1.0, 2.0], np.float16)
    one_ulp = ref.copy()
    one_ulp[1] = np.nextafter(ref[1], np.float16(3))
    assert compare_outputs("y", ref, one_ulp, rtol=1e-4, atol=1e-5).ok
    far = ref.copy()
    far[1] = np.float16(2.01)
    assert not compare_outputs("y", ref, far, rtol=1e-4, atol=1e-5).ok


def test_given_inputs_and_samples():
    feeds = [{"x": np.ones((2, 5), np.float32)}, {"x": -np.ones((2, 5), np.float32)}]
    assert compare_models(unary("Identity"), unary("Relu"), inputs=feeds[0]).ok
    report = compare_models(unary("Identity"), unary("Relu"), inputs=feeds)
    assert not report.ok and report.inputs_used is not None
    assert np.array_equal(report.inputs_used["x"], feeds[0]["x"])
    assert report.summary().startswith("output 'y' (sample 2 of 2): max abs err 1.0e+00")


def test_no_samples_is_an_error():
    with pytest.raises(GraphoptError, match="at least one input sample"):
        compare_models(unary("Identity"), unary("Identity"), inputs=[])
    with pytest.raises(GraphoptError, match="at least one input sample"):
        compare_models(unary("Identity"), unary("Identity"), num_samples=0)


def test_seeded_inputs_are_reproducible():
    r1 = compare_models(binary("Add"), binary("Add"), seed=7)
    r2 = compare_models(binary("Add"), binary("Add"), seed=7)
    r3 = compare_models(binary("Add"), binary("Add"), seed=8)
    assert np.array_equal(r1.inputs_used["a"], r2.inputs_used["a"])
    assert not np.array_equal(r1.inputs_used["a"], r3.inputs_used["a"])


def test_nan_in_same_places_is_equal():
    assert compare_models(unary("Log"), unary("Log")).ok  # negative inputs give NaN
    ref = run(make_session(unary("Log")), {"x": -np.ones((2, 5), np.float32)})["y"]
    assert np.isnan(ref).all()
    report = compare_models(unary("Log"), unary("Abs"))
    assert not report.ok and "NaN/inf mismatch at index" in report.summary()


@pytest.mark.parametrize(
    ("ref", "cand", "ok"),
    [
        ([1.0, np.nan, np.inf, -np.inf], [1.0, np.nan, np.inf, -np.inf], True),
        ([1.0, np.nan], [1.0, 2.0], False),
        ([np.inf], [-np.inf], False),
        ([np.inf], [1e30], False),
        ([1.0], [np.nan], False),
        ([1000.0], [1000.9], True),  # within rtol * |ref|
        ([1000.0], [1001.2], False),
    ],
)
def test_compare_outputs_float_semantics(ref, cand, ok):
    res = compare_outputs("y", np.array(ref, np.float32), np.array(cand, np.float32))
    assert res.ok is ok
    assert (res.reason is None) is ok


def test_compare_outputs_exact_types_shapes_and_dtypes():
    ints = np.array([[1, 2], [3, 4]], np.int64)
    assert compare_outputs("i", ints, ints.copy()).ok
    res = compare_outputs("i", ints, ints + np.array([[0, 0], [0, 1]]))
    assert not res.ok and res.max_abs_err == 1.0
    assert res.reason == (
        "output 'i': 1 of 4 values differ (int64 must match exactly), "
        "first at index (1, 1): np.int64(4) vs np.int64(5)"
    )
    assert not compare_outputs("b", np.array([True, False]), np.array([True, True])).ok
    strs = np.array(["a", "b"], dtype=object)
    assert compare_outputs("s", strs, strs.copy()).ok
    assert not compare_outputs("s", strs, np.array(["a", "c"], dtype=object)).ok
    res = compare_outputs("y", np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32))
    assert not res.ok and "shape (3, 2) differs from reference shape (2, 3)" in res.reason
    res = compare_outputs("y", np.zeros(2, np.float32), np.zeros(2, np.float64))
    assert not res.ok and "dtype float64 differs" in res.reason
    seq = [np.ones(2, np.float32), np.zeros(1, np.float32)]
    assert compare_outputs("q", seq, [a.copy() for a in seq]).ok
    res = compare_outputs("q", seq, [seq[0], np.ones(1, np.float32)])
    assert not res.ok and res.reason.startswith("output 'q': element 1: ")


def test_int_and_bool_outputs_in_models():
    def arg(op):
        io = [("x", F, [3, 4])]
        return model([helper.make_node(op, ["x"], ["y"], axis=1)], io, [("y", 7, [3, 1])])

    assert compare_models(arg("ArgMax"), arg("ArgMax")).ok
    report = compare_models(arg("ArgMax"), arg("ArgMin"))
    assert not report.ok and "int64 must match exactly" in report.summary()

    def cmp(op):
        io = [("a", F, [8]), ("b", F, [8])]
        return model([helper.make_node(op, ["a", "b"], ["y"])], io, [("y", 9, [8])])

    assert compare_models(cmp("Greater"), cmp("Greater")).ok
    report = compare_models(cmp("Greater"), cmp("Less"))
    assert not report.ok and "bool must match exactly" in report.summary()


def test_missing_output_in_candidate():
    cand = unary("Identity")
    cand.graph.node[0].output[0] = "z"
    cand.graph.output[0].name = "z"
    report = compare_models(unary("Identity"), cand)
    assert not report.ok
    assert report.summary() == "output 'y' is missing from the candidate model (its outputs: z)"
    assert math.isnan(report.outputs[0].max_abs_err)


def test_candidate_may_drop_an_unused_input_but_not_add_one():
    two_in = binary("Add")
    two_in.graph.node[0].input[1] = "a"  # b is unused
    one_in = model(
        [helper.make_node("Add", ["a", "a"], ["y"])], [("a", F, [2, 5])], [("y", F, [2, 5])]
    )
    assert compare_models(two_in, one_in).ok
    report = compare_models(one_in, two_in)
    assert not report.ok and "inputs the reference lacks: b" in report.summary()


def test_several_outputs_summary_mentions_the_others():
    def two(op):
        nodes = [helper.make_node(op, ["a", "b"], ["y"]), helper.make_node(op, ["b", "a"], ["z"])]
        return model(nodes, [("a", F, [3]), ("b", F, [3])], [("y", F, [3]), ("z", F, [3])])

    report = compare_models(two("Add"), two("Sub"))
    assert [o.ok for o in report.outputs] == [False, False]
    assert report.summary().startswith("output 'y': ")
    assert report.summary().endswith("(also differing: z)")


def test_bfloat16_inputs_and_outputs():
    to_float = unary("Cast", elem=TensorProto.BFLOAT16, out_elem=F, to=F)
    specs = input_specs(make_session(to_float))
    assert specs[0].dtype.name == "bfloat16"
    feed = random_inputs(specs)
    out = run(make_session(to_float), feed)["y"]
    assert np.array_equal(out, feed["x"].astype(np.float32))
    to_bf16 = unary("Cast", out_elem=TensorProto.BFLOAT16, to=TensorProto.BFLOAT16)
    y = run(make_session(to_bf16), {"x": np.full((2, 5), 1.5, np.float32)})["y"]
    assert y.dtype.name == "bfloat16" and np.array_equal(y.astype(np.float32), np.full((2, 5), 1.5))
    assert compare_models(to_bf16, to_bf16).ok
    neg = model(
        [helper.make_node("Neg", ["x"], ["n"]), helper.make_node("Cast", ["n"], ["y"], to=16)],
        [("x", F, [2, 5])],
        [("y", TensorProto.BFLOAT16, [2, 5])],
    )
    report = compare_models(to_bf16, neg)
    assert not report.ok and "max abs err" in report.summary()


def test_bfloat16_without_ml_dtypes(monkeypatch):
    sess = make_session(unary("Cast", elem=TensorProto.BFLOAT16, out_elem=F, to=F))
    monkeypatch.setattr(runtime, "ml_dtypes", None)
    with pytest.raises(CheckUnavailableError, match="ml_dtypes"):
        input_specs(sess)


# --------------------------------------------------------------------------- external data


def weighted(n=64):
    w = numpy_helper.from_array(np.linspace(-1, 1, n * n, dtype=np.float32).reshape(n, n), "w")
    return model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [("x", F, ["N", n])],
        [("y", F, ["N", n])],
        initializers=[w],
    )


def test_model_with_external_data_loads_by_path(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "m.onnx"
    path.parent.mkdir()
    onnx.save(weighted(), path, save_as_external_data=True, location="m.data", size_threshold=0)
    assert (path.parent / "m.data").stat().st_size == 64 * 64 * 4
    monkeypatch.chdir(tmp_path)  # ORT must resolve m.data next to the model, not the cwd
    report = assert_equivalent(path, weighted(), input_shapes={"x": (3, 64)})
    assert report.inputs_used["x"].shape == (3, 64)
    # The same file as a proto without its data: needs the folder.
    refs = onnx.load(path, load_external_data=False)
    with pytest.raises(CheckUnavailableError, match="external data"):
        make_session(refs)
    assert compare_models(refs, weighted(), external_data_dir=path.parent).ok
    wrong = weighted()
    wrong.graph.initializer[0].float_data[:] = []
    wrong.graph.initializer[0].raw_data = np.zeros((64, 64), np.float32).tobytes()
    assert not compare_models(path, wrong).ok


def test_big_proto_goes_through_a_temporary_folder(monkeypatch):
    monkeypatch.setattr(runtime, "PROTO_SIZE_LIMIT", 1000)
    saved = []
    real_save = onnx.save
    monkeypatch.setattr(
        runtime.onnx, "save", lambda *a, **k: saved.append(a[1]) or real_save(*a, **k)
    )
    proto = weighted()
    before = proto.SerializeToString()
    sess = make_session(proto, device="cpu")
    assert saved and saved[0].endswith("model.onnx")
    assert proto.SerializeToString() == before  # the caller's proto keeps its data
    x = np.ones((1, 64), np.float32)
    expected = x @ numpy_helper.to_array(proto.graph.initializer[0])
    np.testing.assert_allclose(run(sess, {"x": x})["y"], expected, atol=1e-4)


def test_num_samples_use_different_seeds():
    spec = [runtime.InputSpec("x", np.dtype(np.float32), (1,))]
    seed = next(
        s
        for s in range(100)
        if random_inputs(spec, seed=s)["x"][0] > 0 > random_inputs(spec, seed=s + 1)["x"][0]
    )
    m = unary("Identity", shape=[1])
    assert compare_models(m, unary("Relu", shape=[1]), seed=seed).ok
    report = compare_models(m, unary("Relu", shape=[1]), seed=seed, num_samples=2)
    assert not report.ok and "(sample 2 of 2)" in report.summary()
    assert report.inputs_used["x"][0] > 0  # the first sample's inputs
