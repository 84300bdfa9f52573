"""Inference through the graphopt backend: outputs equal eager's on the model kinds issue 6
names (CNN, transformer encoder, GPT-2, graph breaks, dynamic batch sizes, integer and boolean
inputs, in-place ops, several outputs in tuples and dicts), and every graph really runs on
onnxruntime (the recorder's backend raises instead of falling back)."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra")
pytest.importorskip("onnxscript", reason="needs the torch extra (onnxscript)")

from backend_helpers import Recorder, assert_same  # noqa: E402

from benchmarks import models  # noqa: E402

pytestmark = pytest.mark.torch


def _compile(module, backend, **kwargs):
    return torch.compile(module, backend=backend, **kwargs)


def _ran_on_onnxruntime(backend: Recorder) -> None:
    assert backend.graphs, "dynamo compiled no graph"
    for graph in backend.graphs:
        assert graph.fallback_reason is None, graph.fallback_reason
        assert graph.stats.compilations >= 1


@pytest.mark.parametrize("name", ["resnet_tiny", "bert_tiny", "gpt2_tiny"])
def test_zoo_models_match_eager(name):
    module, inputs = models.build(name)
    backend = Recorder()
    compiled = _compile(module, backend)
    with torch.no_grad():
        expected = module(*inputs)
        got = compiled(*inputs)
        again = compiled(*inputs)  # the cached session, not a new compilation
    assert_same(got, expected)
    assert_same(again, expected)
    _ran_on_onnxruntime(backend)
    (graph,) = backend.graphs
    assert graph.stats.compilations == 1
    # parameters are initializers, not inputs: the model's only inputs are the user's
    (entry,) = graph._entries
    assert len(entry.exported.model.graph.input) == len(inputs)
    assert len(entry.exported.frozen) >= len(list(module.parameters()))


class _WithBreak(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(8, 8)
        self.b = torch.nn.Linear(8, 3)

    def forward(self, x):
        y = torch.relu(self.a(x))
        print("", end="")  # an untraceable call: dynamo breaks the graph here
        return self.b(y).softmax(-1)


def test_graph_break_compiles_both_halves():
    module = _WithBreak().eval()
    backend = Recorder()
    compiled = _compile(module, backend)
    x = torch.randn(4, 8)
    with torch.no_grad():
        assert_same(compiled(x), module(x))
    assert len(backend.graphs) == 2
    _ran_on_onnxruntime(backend)


@pytest.mark.parametrize("name", ["resnet_tiny", "bert_tiny"])
def test_dynamic_batch_sizes_compile_once(name):
    module, _ = models.build(name)
    backend = Recorder()
    compiled = _compile(module, backend, dynamic=True)
    with torch.no_grad():
        for batch in (2, 3, 5):
            inputs = models.example_inputs(name, batch=batch, seed=batch)
            assert_same(compiled(*inputs), module(*inputs))
    _ran_on_onnxruntime(backend)
    (graph,) = backend.graphs
    assert graph.stats.compilations == 1  # one symbolic model for every batch size
    (entry,) = graph._entries
    assert entry.exported.dynamic
    assert entry.exported.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param


def test_static_shapes_get_one_session_per_signature():
    module, _ = models.build("bert_tiny")
    backend = Recorder(dynamic=False)
    compiled = _compile(module, backend, dynamic=True)
    with torch.no_grad():
        for batch in (2, 3, 2):
            inputs = models.example_inputs("bert_tiny", batch=batch)
            assert_same(compiled(*inputs), module(*inputs))
    (graph,) = backend.graphs
    assert graph.stats.compilations == 2  # batch 2 again hits the cache
    assert len(graph._entries) == 2
    assert not any(e.exported.dynamic for e in graph._entries)


class _IntBool(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(50, 16)
        self.proj = torch.nn.Linear(16, 4)

    def forward(self, ids, mask, scale: int):
        h = self.emb(ids).masked_fill(~mask[..., None], 0.0)
        pooled = h.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.proj(pooled), mask.any(-1), ids.max(-1).values * scale, ids % 7 == 0


def test_integer_and_boolean_inputs_and_outputs():
    module = _IntBool().eval()
    backend = Recorder()
    compiled = _compile(module, backend)
    ids = torch.randint(0, 50, (3, 10))
    mask = torch.rand(3, 10) > 0.3
    with torch.no_grad():
        got = compiled(ids, mask, 3)
        assert_same(got, module(ids, mask, 3))
    assert got[1].dtype == torch.bool and got[2].dtype == torch.int64
    _ran_on_onnxruntime(backend)


class _InPlace(torch.nn.Module):
    """In-place updates of intermediates, of a user input and of a buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(6, 6)
        self.act = torch.nn.ReLU(inplace=True)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x, acc):
        h = self.act(self.lin(x))
        h += 1.0
        h.mul_(0.5)
        h[:, 0] = -1.0
        acc.add_(h.sum(0))  # the caller sees acc updated, as in eager
        self.calls += 1  # a buffer the graph updates cannot be frozen
        return h


def test_in_place_ops_on_intermediates_inputs_and_buffers():
    module = _InPlace().eval()
    reference = copy.deepcopy(module)
    backend = Recorder()
    compiled = _compile(module, backend)
    x = torch.randn(4, 6)
    acc, acc_ref = torch.zeros(6), torch.zeros(6)
    with torch.no_grad():
        for _ in range(2):
            assert_same(compiled(x, acc), reference(x, acc_ref))
            assert_same(acc, acc_ref)
    assert module.calls.item() == reference.calls.item() == 2
    _ran_on_onnxruntime(backend)
    (entry,) = backend.graphs[0]._entries
    assert len(entry.exported.mutations) == 2  # acc and the buffer, copied back after each run


def test_batch_norm_in_training_mode_without_gradients():
    """Batch statistics and running-statistics updates (torch.onnx alone exports this mode
    with the running statistics: graphopt decomposes it first)."""
    nn = torch.nn
    module = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4)
    ).train()
    image = torch.randn(3, 3, 12, 12) * 2 + 1
    reference = copy.deepcopy(module)
    backend = Recorder()
    compiled = _compile(module, backend)
    with torch.no_grad():
        assert_same(compiled(image), reference(image))
    for buf, ref_buf in zip(module.buffers(), reference.buffers()):
        assert_same(buf, ref_buf)
    _ran_on_onnxruntime(backend)


class _ManyOutputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(5, 5)

    def forward(self, x):
        y = self.lin(x)
        return {
            "logits": y,
            "pair": (y.relu(), y.sigmoid()),
            "same": x,
            "rows": x.shape[0],
            "twice": [y, y],
        }


def test_tuples_dicts_and_non_tensor_outputs():
    module = _ManyOutputs().eval()
    backend = Recorder()
    compiled = _compile(module, backend)
    x = torch.randn(3, 5)
    with torch.no_grad():
        got = compiled(x)
        assert_same(got, module(x))
    assert got["same"] is x  # an input returned as is keeps its identity, as in eager
    _ran_on_onnxruntime(backend)


def test_inference_mode_and_non_contiguous_inputs():
    module, (image,) = models.build("resnet_tiny")
    backend = Recorder()
    compiled = _compile(module, backend)
    wide = torch.randn(2, 3, 64, 128)
    strided = wide[..., ::2]  # a view with strides ORT could not read directly
    assert not strided.is_contiguous()
    with torch.inference_mode():
        assert_same(compiled(strided), module(strided))
        assert_same(compiled(image.expand(2, -1, -1, -1)), module(image.expand(2, -1, -1, -1)))
    _ran_on_onnxruntime(backend)


def test_changed_weights_are_compiled_again():
    module, inputs = models.build("gpt2_tiny")
    backend = Recorder()
    compiled = _compile(module, backend)
    with torch.no_grad():
        compiled(*inputs)
        for p in module.parameters():
            p.mul_(1.01)  # what an optimizer step does
        with pytest.warns(UserWarning, match="changed; compiling it again"):
            got = compiled(*inputs)
        assert_same(got, module(*inputs))
    (graph,) = backend.graphs
    assert graph.stats.compilations == 2
