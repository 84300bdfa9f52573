"""onnxruntime sessions fed with torch tensors through I/O binding, on the CPU here and on
CUDA where a GPU is present (those tests are skipped on CPU-only machines)."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch", reason="needs the torch extra")
pytest.importorskip("onnxscript", reason="needs the torch extra (onnxscript)")
import onnxruntime as ort  # noqa: E402
from backend_helpers import Recorder, assert_same  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from benchmarks import models  # noqa: E402
from optimizer.torch_backend.options import BackendOptions  # noqa: E402
from optimizer.torch_backend.session import OrtRunner, SessionError, providers_for  # noqa: E402

pytestmark = pytest.mark.torch

HAS_CUDA = torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers()
needs_cuda = pytest.mark.skipif(
    not HAS_CUDA, reason="needs a CUDA GPU, torch with CUDA and onnxruntime-gpu"
)


def _model():
    """out = x + y (float), flags = not m (bool), n = shape-preserving int64 copy."""
    graph = helper.make_graph(
        [
            helper.make_node("Add", ["x", "y"], ["out"]),
            helper.make_node("Not", ["m"], ["flags"]),
            helper.make_node("Identity", ["i"], ["n"]),
        ],
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", 3]),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", 3]),
            helper.make_tensor_value_info("m", TensorProto.BOOL, ["b"]),
            helper.make_tensor_value_info("i", TensorProto.INT64, ["c"]),
        ],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, ["a", 3]),
            helper.make_tensor_value_info("flags", TensorProto.BOOL, ["b"]),
            helper.make_tensor_value_info("n", TensorProto.INT64, ["c"]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_runner_takes_and_returns_torch_tensors():
    runner = OrtRunner(_model(), torch.device("cpu"), BackendOptions())
    x = torch.randn(3, 4)[:, :3]  # not contiguous
    y = torch.randn(3, 3)
    m = torch.tensor([True, False, True])
    i = torch.arange(5)
    out, flags, n = runner([x, y, m, i])
    assert_same(out, x + y)
    assert_same(flags, ~m)
    assert_same(n, i)
    empty = runner([torch.empty(0, 3), torch.empty(0, 3), torch.empty(0, dtype=torch.bool), i])
    assert empty[0].shape == (0, 3)


def test_cuda_without_a_cuda_provider_is_refused(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(SessionError, match="no CUDAExecutionProvider"):
        providers_for(torch.device("cuda", 0), BackendOptions())
    assert providers_for(torch.device("cuda", 0), BackendOptions(device="cpu")) == [
        "CPUExecutionProvider"
    ]


@needs_cuda
@pytest.mark.parametrize("name", ["resnet_tiny", "bert_tiny", "gpt2_tiny"])
def test_cuda_inference_stays_on_the_gpu(name):
    module, inputs = models.build(name)
    module = module.cuda()
    inputs = tuple(x.cuda() for x in inputs)
    backend = Recorder(rtol=1e-2, atol=1e-3)  # TF32 and other CUDA kernels
    compiled = torch.compile(module, backend=backend)
    with torch.no_grad():
        got = compiled(*inputs)
        assert got.device.type == "cuda"
        assert_same(got, module(*inputs), rtol=1e-2, atol=1e-3)
    (graph,) = backend.graphs
    (entry,) = graph._entries
    assert entry.runner.on_cuda
    assert entry.runner.session.get_providers()[0] == "CUDAExecutionProvider"


@needs_cuda
def test_cuda_training_step():
    module, inputs = models.build("bert_tiny", batch=2)
    module = module.cuda().train()
    inputs = tuple(x.cuda() for x in inputs)
    reference = copy.deepcopy(module)
    compiled = torch.compile(module, backend=Recorder(rtol=1e-2, atol=1e-3))
    compiled(*inputs).pow(2).mean().backward()
    reference(*inputs).pow(2).mean().backward()
    for p, q in zip(module.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-2, atol=1e-3)
