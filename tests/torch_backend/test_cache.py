"""The persistent compile cache: a hit runs what the miss compiled without exporting or
optimizing again; anything that changes the result misses; a damaged entry is compiled again
after one warning; the cache can be turned off.

Each test gets an empty cache folder of its own (conftest.py). "Another process" is simulated
by ``torch._dynamo.reset()``: dynamo traces the module again and the backend gets a new
GraphModule, so only the persistent cache can carry a compiled model over.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra")
pytest.importorskip("onnxscript", reason="needs the torch extra (onnxscript)")
from backend_helpers import Recorder, assert_same  # noqa: E402

from optimizer.torch_backend import cache as compile_cache  # noqa: E402
from optimizer.torch_backend import compiled as compiled_module  # noqa: E402
from optimizer.torch_backend.cache import GraphoptCacheWarning  # noqa: E402
from optimizer.torch_backend.options import parse_options  # noqa: E402

pytestmark = pytest.mark.torch

QUICK = {"time_limit": 0.2}


class Net(torch.nn.Module):
    """A small model whose outputs exercise what an entry must restore: a nested output
    structure, an argument returned as is, and a size."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(8, 64)  # 2 KiB: its weight goes to the external data file
        self.fc2 = torch.nn.Linear(64, 4)
        self.register_buffer("shift", torch.linspace(-1.0, 1.0, 4))

    def forward(self, x):
        y = self.fc2(torch.relu(self.fc1(x))) + self.shift
        return {"y": y, "x": x, "rows": x.shape[0]}


def _compile_once(model, x, *, dynamic=None, **options):
    """A fresh dynamo cache, then one compiled call: (output, the graph's CompileStats)."""
    torch._dynamo.reset()
    recorder = Recorder(**{**QUICK, **options})
    compiled = torch.compile(model, backend=recorder, dynamic=dynamic)
    with torch.inference_mode():
        out = compiled(x)
    (graph,) = recorder.graphs
    assert graph.fallback_reason is None
    return out, graph.stats


def _entries(tmp_path):
    root = tmp_path / "torch-compile-cache"
    return sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []


def test_hit_runs_the_missed_model_without_export_or_optimization(tmp_path, monkeypatch):
    model, x = Net().eval(), torch.randn(3, 8)
    first, stats = _compile_once(model, x)
    assert (stats.cache, stats.exports) == ("miss", 1)
    assert len(_entries(tmp_path)) == 1

    def no_export(*args, **kwargs):
        raise AssertionError("a cache hit must not export")

    monkeypatch.setattr(compiled_module, "export_graph", no_export)
    second, stats = _compile_once(model, x)
    assert (stats.cache, stats.exports) == ("hit", 0)
    assert stats.export == stats.optimize == stats.verify == 0.0
    assert stats.nodes_before > 0 and stats.nodes_after > 0
    # the same model in the same kind of session: bit for bit the same outputs
    assert torch.equal(second["y"], first["y"])
    assert second["x"] is x and second["rows"] == 3
    with torch.inference_mode():
        assert_same(second, model(x))


def test_changed_weights_miss(tmp_path):
    model, x = Net().eval(), torch.randn(3, 8)
    _compile_once(model, x)
    with torch.no_grad():
        model.fc2.weight.mul_(2.0)
    out, stats = _compile_once(model, x)
    assert stats.cache == "miss"
    assert len(_entries(tmp_path)) == 2
    with torch.inference_mode():
        assert_same(out, model(x))


def test_changed_options_miss_and_runtime_options_hit(tmp_path):
    model, x = Net().eval(), torch.randn(3, 8)
    _compile_once(model, x)
    _, stats = _compile_once(model, x, time_limit=0.3)
    assert stats.cache == "miss"
    # how the session runs does not change the model: threads hit the entry
    _, stats = _compile_once(model, x, threads=1)
    assert stats.cache == "hit"


def test_changed_shapes_miss(tmp_path):
    model = Net().eval()
    _compile_once(model, torch.randn(3, 8), dynamic=False)
    x = torch.randn(5, 8)
    out, stats = _compile_once(model, x, dynamic=False)
    assert stats.cache == "miss"
    with torch.inference_mode():
        assert_same(out, model(x))
    _, stats = _compile_once(model, torch.randn(5, 8), dynamic=False)
    assert stats.cache == "hit"


@pytest.mark.parametrize("damage", ["entry", "graph", "weights"])
def test_damaged_entry_is_compiled_again_with_one_warning(tmp_path, damage):
    model, x = Net().eval(), torch.randn(3, 8)
    _compile_once(model, x)
    (entry,) = _entries(tmp_path)
    if damage == "entry":
        (entry / compile_cache.ENTRY_FILE).write_bytes(b"not a pickle")
    elif damage == "graph":
        graph = entry / compile_cache.MODEL_FILE
        data = bytearray(graph.read_bytes())
        data[len(data) // 2] ^= 0xFF
        graph.write_bytes(bytes(data))
    else:
        data = entry / compile_cache.DATA_FILE
        data.write_bytes(data.read_bytes()[:-8])  # truncated
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, stats = _compile_once(model, x)
    ours = [w for w in caught if issubclass(w.category, GraphoptCacheWarning)]
    assert len(ours) == 1 and "compiling again" in str(ours[0].message)
    assert (stats.cache, stats.exports) == ("miss", 1)
    with torch.inference_mode():
        assert_same(out, model(x))
    if damage == "entry":  # the fresh entry replaced the damaged one
        _, stats = _compile_once(model, x)
        assert stats.cache == "hit"


def test_cache_off_by_option_or_environment(tmp_path, monkeypatch):
    model, x = Net().eval(), torch.randn(3, 8)
    out, stats = _compile_once(model, x, cache=False)
    assert stats.cache == "off" and _entries(tmp_path) == []
    with torch.inference_mode():
        assert_same(out, model(x))
    monkeypatch.setenv(compile_cache.ENABLE_ENV, "0")
    _, stats = _compile_once(model, x)
    assert stats.cache == "off" and _entries(tmp_path) == []


def test_unwritable_cache_folder_warns_and_compiles(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    model, x = Net().eval(), torch.randn(3, 8)
    with pytest.warns(GraphoptCacheWarning, match="cannot write"):
        out, stats = _compile_once(model, x, cache_dir=str(blocker / "cache"))
    assert stats.exports == 1
    with torch.inference_mode():
        assert_same(out, model(x))


def test_key_follows_weights_options_and_inputs():
    model = Net().eval()
    captured = {}

    def capture(gm, example_inputs, **kwargs):
        captured["gm"] = gm
        return gm

    torch._dynamo.reset()
    torch.compile(model, backend=capture)(torch.randn(3, 8))
    gm = captured["gm"]
    args = [
        p.detach() if p is not None else None
        for p in (
            torch.randn(3, 8),
            model.fc1.weight,
            model.fc1.bias,
            model.fc2.weight,
            model.fc2.bias,
            model.shift,
        )
    ]
    from optimizer.torch_backend import static_inputs

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    assert len(placeholders) == len(args)  # dynamo's argument order: x, then what it reads
    frozen = set(range(1, len(args))) | static_inputs(gm, args)
    options = parse_options(QUICK)

    def key(args=args, options=options):
        return compile_cache.compile_key(gm, args, frozen=frozen, scalars=(), options=options)

    base = key()
    assert key() == base
    assert key(options=parse_options(QUICK, threads=3, check=True)) == base
    assert key(options=parse_options(QUICK, search="greedy")) != base
    changed = list(args)
    changed[3] = args[3].clone()
    changed[3][0, 0] += 1.0
    assert key(args=changed) != base
    changed = list(args)
    changed[0] = torch.randn(3, 8, dtype=torch.float64)
    assert key(args=changed) != base


def test_tensor_digest_reads_bytes_in_logical_order():
    t = torch.arange(12, dtype=torch.bfloat16).reshape(3, 4)
    assert compile_cache.tensor_digest(t.t()) == compile_cache.tensor_digest(t.t().contiguous())
    assert compile_cache.tensor_digest(t) != compile_cache.tensor_digest(t.reshape(4, 3))
    assert compile_cache.tensor_digest(torch.zeros(0)) == compile_cache.tensor_digest(
        torch.zeros(0)
    )


def test_key_names_targets_without_addresses():
    # str() of a function shows its address, which differs in every process: a key built
    # from it would never hit in another process
    for target in (torch.nn.functional.linear, torch.matmul, torch.ops.aten.add.Tensor, "relu"):
        name = compile_cache._target_name(target)
        assert "0x" not in name and name


def test_unkeyable_call_compiles_without_the_cache(tmp_path, monkeypatch):
    def unreadable(t):
        raise RuntimeError("cannot read these bytes")

    monkeypatch.setattr(compile_cache, "tensor_digest", unreadable)
    model, x = Net().eval(), torch.randn(3, 8)
    with pytest.warns(GraphoptCacheWarning, match="without the cache"):
        out, stats = _compile_once(model, x)
    assert (stats.cache, stats.exports) == ("off", 1) and _entries(tmp_path) == []
    with torch.inference_mode():
        assert_same(out, model(x))


def test_least_recently_used_entries_go_beyond_the_size_bound(tmp_path, monkeypatch):
    model, x = Net().eval(), torch.randn(3, 8)
    _compile_once(model, x)
    (first,) = _entries(tmp_path)
    # a bound below one entry's size: each store keeps only the entry it just wrote
    monkeypatch.setenv(compile_cache.SIZE_ENV, "1e-6")
    with torch.no_grad():
        model.fc2.weight.mul_(2.0)
    _compile_once(model, x)
    (second,) = _entries(tmp_path)
    assert second != first


def test_unoptimized_models_are_cached_too(tmp_path):
    model, x = Net().eval(), torch.randn(3, 8)
    first, stats = _compile_once(model, x, optimize=False)
    assert stats.cache == "miss"
    second, stats = _compile_once(model, x, optimize=False)
    assert (stats.cache, stats.exports) == ("hit", 0)
    assert torch.equal(second["y"], first["y"])
