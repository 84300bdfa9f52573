"""onnxruntime sessions that take and return torch tensors without copies.

:class:`OrtRunner` runs one ONNX model through I/O binding: inputs are bound by their data
pointers where they lie (CPU or CUDA memory), outputs are allocated by onnxruntime on the
session's device and handed to torch through DLPack, so on CUDA tensors never leave the GPU
and on the CPU no buffer is copied. The same code path serves both devices.

On CUDA the session runs on torch's current stream (the CUDA provider's
``user_compute_stream``), so its kernels queue after the ones that produced the inputs;
when a call comes from another stream, that stream is synchronized first.

The CUDA path has not been run on a GPU yet (none was available when it was written).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from optimizer import runtime
from optimizer.errors import GraphoptError
from optimizer.torch_backend.options import BackendOptions

_CPU, _CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


class SessionError(GraphoptError):
    """onnxruntime cannot load or run a model (the runner falls back to eager)."""


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The numpy dtype I/O binding uses for a torch dtype (SessionError if none)."""
    try:
        return torch.empty((), dtype=dtype).numpy().dtype
    except (TypeError, RuntimeError) as exc:
        raise SessionError(f"onnxruntime I/O binding cannot take {dtype} tensors") from exc


def providers_for(device: torch.device, options: BackendOptions) -> list[Any]:
    """Execution providers for a model whose inputs live on ``device``: the ``providers``
    option if given, else CPU, or CUDA on the device's index (CPU fallback for the nodes
    CUDA lacks) running on torch's current stream."""
    if options.providers is not None:
        return list(options.providers)
    target = device.type if options.device == "auto" else options.device
    if target == "cpu":
        return [_CPU]
    if target != "cuda":
        raise SessionError(f"graphopt cannot run tensors on device {device}")
    if _CUDA not in ort.get_available_providers():
        raise SessionError(
            "the inputs are on CUDA but onnxruntime has no CUDAExecutionProvider "
            "(install onnxruntime-gpu, or pass options={'device': 'cpu'})"
        )
    index = device.index if device.type == "cuda" and device.index is not None else 0
    stream = torch.cuda.current_stream(index).cuda_stream
    cuda_options = {"device_id": str(index), "user_compute_stream": str(stream)}
    return [(_CUDA, cuda_options), _CPU]


def is_cuda(provider: Any) -> bool:
    """Whether ``provider`` (a name or a ``(name, options)`` pair) is CUDA's."""
    return (provider if isinstance(provider, str) else provider[0]) == _CUDA


def session_options(options: BackendOptions) -> ort.SessionOptions:
    """Session settings: the chosen optimization level, intra-op threads (default torch's),
    spinning as chosen (off by default: torch's own threads and other sessions need the cores
    between calls)."""
    threads = options.threads if options.threads is not None else torch.get_num_threads()
    spec = runtime.SessionOptionsSpec(
        opt_level=options.ort_level, intra_op_threads=threads, allow_spinning=options.spinning
    )
    return spec.to_ort()


def create_session(
    model: onnx.ModelProto | str, providers: Sequence[Any], so: ort.SessionOptions
) -> ort.InferenceSession:
    """An InferenceSession for ``model`` (a file, or a proto; protos over protobuf's limit go
    through a temporary file with external data)."""
    try:
        if isinstance(model, str):
            return ort.InferenceSession(model, so, providers=list(providers))
        if model.ByteSize() < runtime.PROTO_SIZE_LIMIT:
            return ort.InferenceSession(model.SerializeToString(), so, providers=list(providers))
        with tempfile.TemporaryDirectory(prefix="graphopt-torch-") as tmp:
            path = os.path.join(tmp, "model.onnx")
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            onnx.save(copy, path, save_as_external_data=True, location="model.onnx.data")
            return ort.InferenceSession(path, so, providers=list(providers))
    except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types
        raise SessionError(f"onnxruntime cannot load the model: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


class OrtRunner:
    """One onnxruntime session called with torch tensors (see the module docstring).

    ``model`` is a ModelProto or the path of a model file. ``device`` is where the inputs
    live; outputs come back on the session's device (the first provider's). ``__call__``
    takes the tensors in the model's input order and returns its outputs in order.
    """

    def __init__(
        self,
        model: onnx.ModelProto | str,
        device: torch.device,
        options: BackendOptions,
        *,
        providers: Sequence[Any] | None = None,
    ) -> None:
        self.providers = (
            list(providers) if providers is not None else providers_for(device, options)
        )
        self.session = create_session(model, self.providers, session_options(options))
        active = self.session.get_providers()
        first = self.providers[0] if isinstance(self.providers[0], str) else self.providers[0][0]
        if first not in active:
            raise SessionError(f"onnxruntime did not enable {first} (active: {', '.join(active)})")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.on_cuda = first == _CUDA
        self.device_id = 0
        self.stream = None
        if self.on_cuda:
            opts = self.providers[0][1] if not isinstance(self.providers[0], str) else {}
            self.device_id = int(opts.get("device_id", 0))
            self.stream = opts.get("user_compute_stream")
        self.output_device = "cuda" if self.on_cuda else "cpu"

    def __call__(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        binding = self.session.io_binding()
        keep = []  # contiguous copies must outlive the run
        for name, tensor in zip(self.input_names, inputs):
            tensor = tensor.detach()
            if not tensor.is_contiguous():
                tensor = tensor.contiguous()
            keep.append(tensor)
            device = tensor.device
            binding.bind_input(
                name,
                device.type,
                device.index or 0,
                numpy_dtype(tensor.dtype),
                tuple(tensor.shape),
                tensor.data_ptr() if tensor.numel() else 0,
            )
        for name in self.output_names:
            binding.bind_output(name, self.output_device, self.device_id)
        if self.on_cuda:
            current = torch.cuda.current_stream(self.device_id)
            if str(current.cuda_stream) != self.stream:
                current.synchronize()  # ORT's stream would not wait for this one's work
        try:
            self.session.run_with_iobinding(binding)
        except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types
            raise SessionError(f"onnxruntime failed to run the model: {_first_line(exc)}") from exc
        del keep
        return [_to_torch(v) for v in binding.get_outputs()]


def _to_torch(value: ort.OrtValue) -> torch.Tensor:
    """An onnxruntime output as a torch tensor sharing its memory (DLPack)."""
    return torch.utils.dlpack.from_dlpack(value._ortvalue.to_dlpack())
