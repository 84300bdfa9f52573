"""Running the labeller's inference steps on a Ray cluster (the ``ray`` extra).

:class:`RayEngine` is the Ray counterpart of :class:`~optimizer.label.inference.LocalEngine`:
the driver reads the dataset chunk by chunk (the same readers and checks as locally) and puts
each chunk into Ray's object store (which spills to disk, so the dataset need not fit in
memory); Ray Data then maps the prepared (optimized) model over those blocks in batches with an
actor pool, each actor holding one onnxruntime session, and the driver gathers the outputs by
row number. Predictions, Monte Carlo sampling and everything computed from them are identical
to a local run (same model bytes, same batches, same post-processing).

Workers need onnxruntime, numpy and graphopt importable (true on a local instance; on a remote
cluster install graphopt there or ship it with a ``runtime_env``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import onnx

from optimizer import runtime
from optimizer.label.data import Chunk
from optimizer.label.exceptions import LabelBackendError, LabelModelError


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library is a separate extra of ray
    except ImportError as exc:
        raise LabelBackendError(
            "the Ray backend needs ray with Ray Data: pip install 'graphopt[ray]' "
            "(or pip install 'ray[data]')"
        ) from exc
    return ray


def connect(address: str) -> None:
    """Connect to Ray: ``"local"`` starts (or reuses) a local instance, ``"auto"`` joins the
    cluster this machine belongs to, anything else is a cluster address (``ray://host:port``
    or ``host:port``). A session already initialised in this process is reused as it is."""
    ray = _ray()
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    try:
        if address == "local":
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray raises many types for an unreachable cluster
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LabelBackendError(f"cannot connect to Ray at {address!r}: {first}") from exc


class OrtPredictor:
    """A Ray Data actor: one onnxruntime session, run on each batch of rows.

    Returns the row numbers with every model output (``out0``, ``out1``, ...); Monte Carlo
    outputs are returned item-major (``rows x samples x ...``) so rows stay aligned.
    """

    def __init__(
        self,
        model: bytes,
        input_name: str,
        samples: int,
        device: str,
        options: runtime.SessionOptionsSpec,
    ) -> None:
        from optimizer.label.inference import make_ort_session

        self.session = make_ort_session(model, mc=samples > 0, device=device, options=options)
        self.input_name = input_name
        self.samples = samples

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from optimizer.label.inference import run_batch

        x = np.ascontiguousarray(batch["x"])
        outs = run_batch(self.session, self.input_name, x, self.samples)
        result = {"row": batch["row"]}
        for k, out in enumerate(outs):
            result[f"out{k}"] = out
        return result


class RayEngine:
    """Runs prepared models as Ray Data batches on an actor pool (see the module docstring).

    ``num_actors``: actors in the pool (default: the cluster's CPUs, at most one per block);
    ``options``: onnxruntime settings of each actor's session (default: one intra-op thread
    per actor, no spinning, since actors share the machine's cores).
    """

    def __init__(
        self,
        address: str = "local",
        *,
        device: str = "cpu",
        options: runtime.SessionOptionsSpec | None = None,
        num_actors: int | None = None,
    ) -> None:
        _ray()
        self.address = address
        self.device = device
        base = options or runtime.SessionOptionsSpec()
        threads = base.intra_op_threads or 1
        self.options = runtime.SessionOptionsSpec(
            opt_level=base.opt_level,
            intra_op_threads=threads,
            allow_spinning=False,
            log_severity=base.log_severity,
        )
        if num_actors is not None and num_actors < 1:
            raise LabelBackendError(f"num_actors must be at least 1, got {num_actors}")
        self.num_actors = num_actors
        self.session_runs = 0

    def run(
        self,
        model: onnx.ModelProto,
        chunks: Iterator[tuple[Chunk, np.ndarray]],
        *,
        input_name: str,
        batch_size: int,
        samples: int = 0,
    ) -> Iterator[tuple[Chunk, list[np.ndarray]]]:
        ray = _ray()
        import pyarrow as pa
        from ray.data.extensions import ArrowTensorArray

        connect(self.address)
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        metas: list[Chunk] = []
        refs = []
        start = 0
        for chunk, x in chunks:
            rows = np.arange(start, start + len(x), dtype=np.int64)
            table = pa.table({"row": pa.array(rows), "x": ArrowTensorArray.from_numpy(x)})
            refs.append(ray.put(table))
            metas.append(chunk)
            start += len(x)
        if not refs:
            return
        cpus = int(ray.available_resources().get("CPU", 1)) or 1
        actors = self.num_actors or max(1, min(cpus, len(refs)))
        dataset = ray.data.from_arrow_refs(refs).map_batches(
            OrtPredictor,
            fn_constructor_kwargs={
                "model": model.SerializeToString(),
                "input_name": input_name,
                "samples": samples,
                "device": self.device,
                "options": self.options,
            },
            compute=ray.data.ActorPoolStrategy(size=actors),
            batch_size=batch_size,
            batch_format="numpy",
            num_cpus=self.options.intra_op_threads,
        )
        rows_out: list[np.ndarray] = []
        outputs: list[list[np.ndarray]] = []
        try:
            for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
                rows_out.append(batch["row"])
                outputs.append([batch[f"out{k}"] for k in range(len(batch) - 1)])
                self.session_runs += 1
        except Exception as exc:  # noqa: BLE001 - a failing actor surfaces as a Ray error
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LabelModelError(f"a Ray worker failed: {first}") from exc
        order = np.argsort(np.concatenate(rows_out), kind="stable")
        if len(order) != start:
            raise LabelBackendError(f"Ray returned {len(order)} rows for {start} inputs")
        merged = [np.concatenate([o[k] for o in outputs])[order] for k in range(len(outputs[0]))]
        offset = 0
        for chunk in metas:
            n = len(chunk)
            yield chunk, [m[offset : offset + n] for m in merged]
            offset += n
