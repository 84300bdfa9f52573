"""The peers of `graphopt bench`: each installed peer's output runs and matches the original;
whatever a peer does (raise, abort, hang, vanish) becomes an outcome, never the caller's crash.

Misbehaviour is simulated in the child through the documented test hook
(``GRAPHOPT_BENCH_PEER_TEST_HOOK``) on the hidden do-nothing peer ``test-peer``, so those tests
need no third-party optimizer.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from optimizer.bench import peers
from optimizer.bench.peers import (
    INSTALL_HINT,
    PEERS,
    RESULT_PREFIX,
    TEST_HOOK_ENV,
    Peer,
    PeerOutcome,
    available_peers,
    peer_versions,
    run_peer,
    save_model,
)
from optimizer.errors import GraphoptError
from optimizer.runtime import compare_models

OPSET = 17
BERT = {"model_type": "bert", "num_heads": 2, "hidden_size": 16}


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def mixed_model(seed: int = 0) -> onnx.ModelProto:
    """Conv+BatchNormalization+Relu on an image, MatMul+Add and an Identity chain on a vector."""
    rng = np.random.default_rng(seed)
    c = 4
    normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    inits = [
        _init("w", normal(c, 3, 3, 3)),
        _init("b", normal(c)),
        _init("bn_scale", (rng.random(c) + 0.5).astype(np.float32)),
        _init("bn_bias", normal(c)),
        _init("bn_mean", normal(c) * 0.1),
        _init("bn_var", (rng.random(c) + 0.5).astype(np.float32)),
        _init("mm_w", normal(8, 5)),
        _init("mm_b", normal(5)),
    ]
    node = helper.make_node
    nodes = [
        node("Conv", ["img", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
        node("BatchNormalization", ["conv", "bn_scale", "bn_bias", "bn_mean", "bn_var"], ["bn"]),
        node("Relu", ["bn"], ["features"]),
        node("MatMul", ["vec", "mm_w"], ["mm"]),
        node("Add", ["mm", "mm_b"], ["mm_out"]),
        node("Identity", ["mm_out"], ["id1"]),
        node("Identity", ["id1"], ["id2"]),
        node("Relu", ["id2"], ["logits"]),
    ]
    info = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "mixed",
        [info("img", TensorProto.FLOAT, [1, 3, 8, 8]), info("vec", TensorProto.FLOAT, [2, 8])],
        [
            info("features", TensorProto.FLOAT, [1, c, 8, 8]),
            info("logits", TensorProto.FLOAT, [2, 5]),
        ],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def bert_attention_block(hidden: int = 16, heads: int = 2, seq: int = 4, seed: int = 0):
    """One BERT self-attention layer as PyTorch exports it: Add+LayerNorm, Q/K/V projections,
    scaled masked softmax, output projection, residual Add+LayerNorm. Its ``mask`` input is
    an int64 attention mask of 0s and 1s."""
    rng = np.random.default_rng(seed)
    head = hidden // heads
    normal = lambda *shape: (rng.standard_normal(shape) * 0.3).astype(np.float32)  # noqa: E731
    positive = lambda n: (rng.random(n) + 0.5).astype(np.float32)  # noqa: E731
    inits = {
        "ln_w": positive(hidden),
        "ln_b": normal(hidden),
        **{f"w{p}": normal(hidden, hidden) for p in "qkvo"},
        **{f"b{p}": normal(hidden) for p in "qkvo"},
        "ln2_w": positive(hidden),
        "ln2_b": normal(hidden),
        "scale": np.array([math.sqrt(head)], np.float32),
        "one": np.array([1.0], np.float32),
        "neg": np.array([-10000.0], np.float32),
        "to_heads": np.array([0, 0, heads, head], np.int64),
        "to_hidden": np.array([0, 0, hidden], np.int64),
        "axis1": np.array([1], np.int64),
        "axis2": np.array([2], np.int64),
    }
    node = helper.make_node

    def projection(p: str, perm: list[int]) -> list[onnx.NodeProto]:
        return [
            node("MatMul", ["h", f"w{p}"], [f"{p}0"]),
            node("Add", [f"{p}0", f"b{p}"], [f"{p}1"]),
            node("Reshape", [f"{p}1", "to_heads"], [f"{p}2"]),
            node("Transpose", [f"{p}2"], [p], perm=perm),
        ]

    nodes = [
        node("Add", ["x", "skip"], ["ln_in"]),
        node("LayerNormalization", ["ln_in", "ln_w", "ln_b"], ["h"], axis=-1, epsilon=1e-5),
        *projection("q", [0, 2, 1, 3]),
        *projection("k", [0, 2, 3, 1]),
        *projection("v", [0, 2, 1, 3]),
        node("Unsqueeze", ["mask", "axis1"], ["m1"]),
        node("Unsqueeze", ["m1", "axis2"], ["m2"]),
        node("Cast", ["m2"], ["m3"], to=TensorProto.FLOAT),
        node("Sub", ["one", "m3"], ["m4"]),
        node("Mul", ["m4", "neg"], ["m5"]),
        node("MatMul", ["q", "k"], ["qk"]),
        node("Div", ["qk", "scale"], ["qk1"]),
        node("Add", ["qk1", "m5"], ["qk2"]),
        node("Softmax", ["qk2"], ["probs"], axis=3),
        node("MatMul", ["probs", "v"], ["a0"]),
        node("Transpose", ["a0"], ["a1"], perm=[0, 2, 1, 3]),
        node("Reshape", ["a1", "to_hidden"], ["a2"]),
        node("MatMul", ["a2", "wo"], ["o0"]),
        node("Add", ["o0", "bo"], ["o1"]),
        node("Add", ["o1", "h"], ["o2"]),
        node("LayerNormalization", ["o2", "ln2_w", "ln2_b"], ["y"], axis=-1, epsilon=1e-5),
    ]
    info = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes,
        "bert_attention",
        [
            info("x", TensorProto.FLOAT, [1, seq, hidden]),
            info("skip", TensorProto.FLOAT, [1, seq, hidden]),
            info("mask", TensorProto.INT64, [1, seq]),
        ],
        [info("y", TensorProto.FLOAT, [1, seq, hidden])],
        [_init(k, v) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def bert_inputs(seed: int = 1) -> dict[str, np.ndarray]:
    # A valid attention mask: 0/1 with the padding at the end (what ort-transformers assumes).
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((1, 4, 16)).astype(np.float32),
        "skip": rng.standard_normal((1, 4, 16)).astype(np.float32),
        "mask": np.array([[1, 1, 1, 0]], np.int64),
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("peer-models")
    paths = {}
    for name, model in (("mixed", mixed_model()), ("bert", bert_attention_block())):
        onnx.checker.check_model(model, full_check=True)
        paths[name] = folder / f"{name}.onnx"
        onnx.save(model, paths[name])
    return paths


def _ops(path: Path) -> set[tuple[str, str]]:
    return {(n.domain or "", n.op_type) for n in onnx.load(path).graph.node}


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------


def test_registry_lists_the_four_peers_in_order():
    assert list(PEERS) == ["onnxsim", "onnxoptimizer", "onnxscript", "ort-transformers"]
    for name, peer in PEERS.items():
        assert peer.name == name
        assert peer.packages and peer.modules and peer.description
        assert "\n" not in peer.description
    assert [n for n, p in PEERS.items() if p.ort_only] == ["ort-transformers"]
    assert [n for n, p in PEERS.items() if p.transformer_only] == ["ort-transformers"]


def test_applies_to():
    assert PEERS["onnxsim"].applies_to(None) and PEERS["onnxsim"].applies_to(BERT)
    assert not PEERS["ort-transformers"].applies_to(None)
    assert PEERS["ort-transformers"].applies_to(BERT)


def test_available_peers_agree_with_installed_versions():
    versions = peer_versions()
    assert list(versions) == list(PEERS)
    assert available_peers() == [n for n, v in versions.items() if v is not None]
    for name in available_peers():
        assert versions[name] == metadata.version(
            next(d for d in PEERS[name].packages if _installed(d))
        )


def _installed(dist: str) -> bool:
    try:
        metadata.version(dist)
    except metadata.PackageNotFoundError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# real peers: outputs run on onnxruntime and equal the original's
# ---------------------------------------------------------------------------------------------

CASES = [
    ("onnxsim", "mixed", None),
    ("onnxoptimizer", "mixed", None),
    ("onnxscript", "mixed", None),
    ("onnxsim", "bert", None),
    ("onnxoptimizer", "bert", None),
    ("onnxscript", "bert", None),
    ("ort-transformers", "bert", BERT),
]


@pytest.mark.parametrize(("name", "model", "transformer"), CASES)
def test_peer_output_runs_and_matches(models, tmp_path, name, model, transformer):
    if name not in available_peers():
        pytest.skip(f"{name} is not installed ({INSTALL_HINT})")
    dst = tmp_path / "out.onnx"
    outcome = run_peer(name, models[model], dst, transformer=transformer, timeout=120)
    assert outcome.status == "ok", outcome.error
    assert outcome.peer == name and outcome.error is None and outcome.path == dst
    assert isinstance(outcome.seconds, float) and outcome.seconds >= 0
    assert _leftovers(tmp_path, {"out.onnx"}) == []
    onnx.checker.check_model(str(dst))  # a valid file, with every domain it uses imported
    ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    inputs = bert_inputs() if model == "bert" else None
    report = compare_models(models[model], dst, inputs=inputs, num_samples=1 if inputs else 3)
    assert report.ok, report.summary()
    ops = _ops(dst)
    if model == "mixed":  # every peer fuses BatchNormalization into the Conv
        assert ("", "BatchNormalization") not in ops
        assert ("", "Identity") not in ops
    if name == "ort-transformers":  # its fusions fired: com.microsoft ops, onnxruntime only
        assert {("com.microsoft", "Attention"), ("com.microsoft", "SkipLayerNormalization")} <= ops


def test_unknown_transformer_model_type_is_failed(models, tmp_path):
    if "ort-transformers" not in available_peers():
        pytest.skip(f"ort-transformers is not installed ({INSTALL_HINT})")
    dst = tmp_path / "out.onnx"
    outcome = run_peer("ort-transformers", models["bert"], dst, transformer={"model_type": "nope"})
    assert outcome.status == "failed"
    assert outcome.error.startswith("ValueError: unknown model_type 'nope'")
    assert not dst.exists()


def test_transformer_peer_is_skipped_without_a_description(models, tmp_path):
    dst = tmp_path / "out.onnx"
    outcome = run_peer("ort-transformers", models["mixed"], dst)
    assert outcome.status == "skipped" and "transformer" in outcome.error
    assert outcome.seconds is None and outcome.path is None
    assert not dst.exists()


# ---------------------------------------------------------------------------------------------
# failures become outcomes
# ---------------------------------------------------------------------------------------------


def test_missing_source_is_failed(tmp_path):
    dst = tmp_path / "out.onnx"
    outcome = run_peer("test-peer", tmp_path / "missing.onnx", dst)
    assert outcome.status == "failed"
    assert "missing.onnx" in outcome.error and outcome.path is None and outcome.seconds is None
    assert _leftovers(tmp_path, set()) == []


def test_unloadable_source_is_failed_in_the_child(tmp_path):
    src, dst = tmp_path / "junk.onnx", tmp_path / "out.onnx"
    src.write_bytes(b"\xff\x00 this is not a protobuf")
    outcome = run_peer("test-peer", src, dst)
    assert outcome.status == "failed" and outcome.error.startswith("cannot load")
    assert "\n" not in outcome.error
    assert _leftovers(tmp_path, {"junk.onnx"}) == []


def test_hidden_test_peer_copies_its_input(models, tmp_path):
    dst = tmp_path / "out.onnx"
    outcome = run_peer("test-peer", models["mixed"], dst)
    assert outcome.status == "ok" and outcome.path == dst
    assert compare_models(models["mixed"], dst).ok
    assert "test-peer" not in available_peers() and "test-peer" not in peer_versions()


def test_python_exception_is_failed_with_its_first_line(models, tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_HOOK_ENV, "raise")
    dst = tmp_path / "out.onnx"
    outcome = run_peer("test-peer", models["mixed"], dst)
    assert outcome == PeerOutcome(
        "test-peer", "failed", error="RuntimeError: test hook: simulated peer failure"
    )
    assert not dst.exists()


def test_abort_is_crashed_and_the_caller_survives(models, tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_HOOK_ENV, "abort")
    dst = tmp_path / "out.onnx"
    outcome = run_peer("test-peer", models["mixed"], dst)
    assert outcome.status == "crashed"
    assert outcome.error.startswith("killed by SIGABRT")
    assert "test hook: aborting" in outcome.error  # the last stderr line
    assert outcome.seconds is None and outcome.path is None
    assert _leftovers(tmp_path, set()) == []


def test_segfault_is_crashed_naming_the_signal(models, tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_HOOK_ENV, "segfault")
    outcome = run_peer("test-peer", models["mixed"], tmp_path / "out.onnx")
    assert outcome.status == "crashed" and outcome.error.startswith("killed by SIGSEGV")
    assert _leftovers(tmp_path, set()) == []


def test_abort_while_saving_leaves_nothing_behind(models, tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_HOOK_ENV, "abort-saving")
    outcome = run_peer("test-peer", models["mixed"], tmp_path / "out.onnx")
    assert outcome.status == "crashed" and "SIGABRT" in outcome.error
    assert _leftovers(tmp_path, set()) == []


def test_exit_without_result_is_crashed_with_status(models, tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_HOOK_ENV, "exit")
    outcome = run_peer("test-peer", models["mixed"], tmp_path / "out.onnx")
    assert outcome.status == "crashed"
    assert (
        outcome.error == "exited with status 3 without a result: test hook: exiting with status 3"
    )


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # a zombie has exited


def test_timeout_kills_the_whole_process_group(models, tmp_path, monkeypatch):
    pid_file = tmp_path / "pids"
    monkeypatch.setenv(TEST_HOOK_ENV, "hang")
    monkeypatch.setenv(TEST_HOOK_ENV + "_PIDFILE", str(pid_file))
    out = tmp_path / "out"
    outcome = run_peer("test-peer", models["mixed"], out / "model.onnx", timeout=8)
    assert outcome.status == "timeout" and "8 s" in outcome.error
    assert outcome.seconds is None and outcome.path is None
    pids = [int(p) for p in pid_file.read_text().split()]
    assert len(pids) == 2  # the child and the grandchild it started
    deadline = time.monotonic() + 10
    while any(map(_alive, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(map(_alive, pids))
    assert not out.exists() or _leftovers(out, set()) == []


def test_import_error_in_the_child_is_unavailable(models, tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_HOOK_ENV, "unimportable")
    outcome = run_peer("test-peer", models["mixed"], tmp_path / "out.onnx")
    assert outcome.status == "unavailable"
    assert "graphopt_test_missing_peer" in outcome.error and INSTALL_HINT in outcome.error
    assert _leftovers(tmp_path, set()) == []


def test_uninstalled_peer_is_unavailable_without_a_child(models, tmp_path, monkeypatch):
    def never(transformer):
        raise AssertionError("an unavailable peer must not be prepared")

    fake = Peer("fake", ("graphopt-fake-peer",), ("graphopt_no_such_module",), "x", False, never)
    monkeypatch.setitem(PEERS, "fake", fake)
    assert "fake" not in available_peers() and peer_versions()["fake"] is None
    outcome = run_peer("fake", models["mixed"], tmp_path / "out.onnx")
    assert outcome.status == "unavailable"
    assert outcome.error == f"graphopt-fake-peer is not installed; {INSTALL_HINT}"


def test_peer_noise_on_stdout_does_not_confuse_the_result(models, tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_HOOK_ENV, "noise")
    outcome = run_peer("test-peer", models["mixed"], tmp_path / "out.onnx")
    assert outcome.status == "ok" and outcome.seconds >= 0


def test_child_prints_only_the_result_line_on_stdout(models, tmp_path, monkeypatch):
    # What peers print, from Python or straight to file descriptor 1, must go to stderr.
    monkeypatch.setenv(TEST_HOOK_ENV, "noise")
    dst = tmp_path / "out.onnx"
    cmd = [
        sys.executable,
        "-m",
        "optimizer.bench.peers",
        "test-peer",
        str(models["mixed"]),
        str(dst),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=peers._child_env())
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith(RESULT_PREFIX)
    result = json.loads(line[len(RESULT_PREFIX) :])
    assert result["peer"] == "test-peer" and result["status"] == "ok" and result["error"] is None
    assert result["seconds"] >= 0
    assert "noise written to fd 1" in done.stderr
    assert dst.is_file()


def test_result_parsing_takes_the_last_prefixed_line():
    text = "\n".join(
        [
            "progress 10%",
            RESULT_PREFIX + '{"status": "failed", "error": "early"}',
            "more noise",
            RESULT_PREFIX + '{"status": "ok", "seconds": 0.5, "error": null}',
            "",
        ]
    )
    assert peers._parse_result(text) == {"status": "ok", "seconds": 0.5, "error": None}
    assert peers._parse_result("nothing here") is None
    assert peers._parse_result(RESULT_PREFIX + "{truncated") is None


# ---------------------------------------------------------------------------------------------
# arguments and saving
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "transformer", "message"),
    [
        ("nope", None, "unknown peer 'nope'"),
        ("onnxsim", {"model_type": "bert", "heads": 2}, "unknown transformer key(s) heads"),
        ("onnxsim", {"num_heads": 2}, "needs a model_type"),
        ("onnxsim", {"model_type": "bert", "num_heads": -1}, "num_heads must be"),
    ],
)
def test_bad_arguments_raise_graphopt_errors(models, tmp_path, name, transformer, message):
    with pytest.raises(GraphoptError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_peer(name, models["mixed"], tmp_path / "out.onnx", transformer=transformer)
    assert _leftovers(tmp_path, set()) == []


def test_output_never_overwrites_the_input(models):
    with pytest.raises(GraphoptError, match="overwrite its input"):
        run_peer("test-peer", models["mixed"], models["mixed"])


def _wide_matmul(n: int = 64) -> onnx.ModelProto:
    weight = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    info = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "wide",
        [info("x", TensorProto.FLOAT, [2, n])],
        [info("y", TensorProto.FLOAT, [2, n])],
        [_init("w", weight)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def test_save_model_uses_external_data_over_the_limit(tmp_path):
    src, dst = tmp_path / "src" / "wide.onnx", tmp_path / "out" / "big.onnx"
    src.parent.mkdir()
    onnx.save(_wide_matmul(), src)
    save_model(onnx.load(src), dst, limit=1)
    assert _leftovers(dst.parent, {"big.onnx", "big.onnx.data"}) == []
    (weight,) = onnx.load(dst, load_external_data=False).graph.initializer
    assert weight.data_location == TensorProto.EXTERNAL
    assert (dst.parent / "big.onnx.data").stat().st_size >= 64 * 64 * 4
    assert compare_models(src, dst).ok


def test_save_model_inline_below_the_limit(models, tmp_path):
    dst = tmp_path / "small.onnx"
    save_model(onnx.load(models["mixed"]), dst)
    assert _leftovers(tmp_path, {"small.onnx"}) == []
    assert compare_models(models["mixed"], dst).ok
