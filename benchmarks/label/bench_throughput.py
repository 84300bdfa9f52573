"""Labelling throughput: graphopt's optimized graph against the unoptimized model, both on
onnxruntime, in one process.

For each model, two :class:`optimizer.label.LabelModel`\\ s label the same rows: A runs the
graph optimized by graphopt (``optimize=True``: passes plus the numeric check), B the
unoptimized model (``optimize=False``; same outputs, the embedding exposed the same way).
Every sample is one full labelling step (``predict`` with embeddings: read, batch, run,
softmax), timed with ``time.perf_counter``; the two alternate A B B A ... so that drifts in
machine load hit both, and the figure is the median of the per-pair ratios time(B)/time(A)
(above 1: the optimized graph is faster). onnxruntime runs with a fixed number of intra-op
threads and ``session.intra_op.allow_spinning = 0`` (an idle session's spinning threads would
steal the other's cores), at ORT's own optimization level ``all`` (what users run) and
``disable`` (graphopt's passes alone).

Models: the digits MLP (exported with torch.onnx.export, Dropouts kept in inference mode; also
timed for Monte Carlo dropout with 20 samples), two image classifiers of the benchmark zoo
(``resnet_tiny``, ``mobilenet_v2_tiny``; random weights, static batch 32, exported as the zoo
does, i.e. already cleaned up by the exporter) and ``resnet_tiny`` exported raw
(``optimize=False``).

    python -m benchmarks.label.bench_throughput [--pairs 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.label import _results
from benchmarks.label.digits import export_mlp, load_digits_data, train_mlp
from optimizer.label import LabelModel
from optimizer.runtime import SessionOptionsSpec

#: A sample must last at least this long for perf_counter noise not to matter.
MIN_SAMPLE_S = 0.03


def _timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def _repeats(step: Callable[[], object]) -> int:
    """How many calls make one sample of at least MIN_SAMPLE_S."""
    once = max(_timed(step), 1e-6)
    return max(1, int(np.ceil(MIN_SAMPLE_S / once)))


def ab_pairs(a: Callable[[], object], b: Callable[[], object], pairs: int) -> dict:
    """Interleaved timing A B B A ...: per-pair ratios time(B) / time(A)."""
    a(), b()  # warm-up: sessions built, caches filled
    reps = max(_repeats(a), _repeats(b))

    def sample(step):
        return _timed(lambda: [step() for _ in range(reps)]) / reps

    ta, tb = [], []
    for k in range(pairs):
        if k % 2 == 0:
            ta.append(sample(a))
            tb.append(sample(b))
        else:
            tb.append(sample(b))
            ta.append(sample(a))
    ratios = [y / x for x, y in zip(ta, tb)]
    q = np.percentile(ratios, [25, 75])
    return {
        "median_ratio": statistics.median(ratios),
        "ratio_iqr": [float(q[0]), float(q[1])],
        "median_seconds_optimized": statistics.median(ta),
        "median_seconds_unoptimized": statistics.median(tb),
        "calls_per_sample": reps,
        "pairs": pairs,
    }


def _zoo_model(name: str, batch: int, folder: Path) -> Path | None:
    try:
        from benchmarks import models
    except ImportError:
        return None
    return models.export(name, batch=batch, cache_dir=folder)


def _raw_export(name: str, batch: int, folder: Path) -> Path | None:
    """A zoo model exported without the exporter's own clean-up (``optimize=False``): the
    Identity nodes and constant subexpressions a plain export leaves for graphopt."""
    try:
        import torch

        from benchmarks import models
    except ImportError:
        return None
    module, inputs = models.build(name, batch=batch)
    path = folder / f"{name}-raw-b{batch}.onnx"
    program = torch.onnx.export(module, tuple(inputs), dynamo=True, optimize=False)
    program.save(str(path))
    return path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=None, help="zoo export cache folder")
    args = parser.parse_args(argv)
    x, y = load_digits_data()
    tmp = Path(tempfile.mkdtemp(prefix="graphopt-label-bench-"))
    cache = args.cache or tmp
    mlp_path = export_mlp(train_mlp(x, y, seed=0, epochs=20), tmp / "digits_mlp.onnx")
    rows_mlp = np.tile(x, (6, 1))  # 10782 rows
    mc_rows = x[:512]
    cases = [("digits MLP", mlp_path, rows_mlp, 512)]
    rng = np.random.default_rng(0)
    images = rng.standard_normal((256, 3, 64, 64)).astype(np.float32)
    for name in ("resnet_tiny", "mobilenet_v2_tiny"):
        path = _zoo_model(name, 32, cache)
        if path is not None:
            cases.append((name, path, images, 32))
    raw = _raw_export("resnet_tiny", 32, tmp)
    if raw is not None:
        cases.append(("resnet_tiny (raw export)", raw, images, 32))
    results = []
    for level in ("all", "disable"):
        options = SessionOptionsSpec(
            opt_level=level, intra_op_threads=args.threads, allow_spinning=False
        )
        for name, path, data, batch in cases:
            fast = LabelModel(path, session_options=options)
            slow = LabelModel(path, session_options=options, optimize=False)
            fig = ab_pairs(
                lambda m=fast, d=data, b=batch: m.predict(d, batch_size=b),
                lambda m=slow, d=data, b=batch: m.predict(d, batch_size=b),
                args.pairs,
            )
            fig.update(model=name, step="predict + embeddings", ort_level=level, rows=len(data))
            fig["rows_per_s_optimized"] = len(data) / fig["median_seconds_optimized"]
            fig["rows_per_s_unoptimized"] = len(data) / fig["median_seconds_unoptimized"]
            fig["nodes_optimized"] = len(fast.prediction_model().graph.node)
            fig["nodes_unoptimized"] = len(slow.prediction_model().graph.node)
            results.append(fig)
            print(f"{name} [{level}] predict: x{fig['median_ratio']:.3f}", flush=True)
            if name == "digits MLP":
                fig = ab_pairs(
                    lambda m=fast: m.mc_dropout(mc_rows, samples=20, seed=0, batch_size=64),
                    lambda m=slow: m.mc_dropout(mc_rows, samples=20, seed=0, batch_size=64),
                    args.pairs,
                )
                fig["nodes_optimized"] = len(fast.mc_model(20, seed=0).graph.node)
                fig["nodes_unoptimized"] = len(slow.mc_model(20, seed=0).graph.node)
                fig.update(model=name, step="MC dropout, 20 samples", ort_level=level, rows=512)
                fig["rows_per_s_optimized"] = 512 / fig["median_seconds_optimized"]
                fig["rows_per_s_unoptimized"] = 512 / fig["median_seconds_unoptimized"]
                results.append(fig)
                print(f"{name} [{level}] MC dropout: x{fig['median_ratio']:.3f}", flush=True)
    data = {
        "benchmark": "labelling throughput, graphopt-optimized vs unoptimized, onnxruntime",
        "threads": args.threads,
        "pairs": args.pairs,
        "results": results,
    }
    rows = [
        [
            r["model"],
            r["step"],
            r["ort_level"],
            f"{r['nodes_unoptimized']} -> {r['nodes_optimized']}",
            f"{r['rows_per_s_unoptimized']:.0f}",
            f"{r['rows_per_s_optimized']:.0f}",
            f"x{r['median_ratio']:.3f} [{r['ratio_iqr'][0]:.3f}, {r['ratio_iqr'][1]:.3f}]",
        ]
        for r in results
    ]
    md = (
        "### Labelling throughput: graphopt's optimized graph vs the unoptimized model\n\n"
        f"onnxruntime on CPU, {args.threads} intra-op thread(s), spinning off; A/B interleaved "
        f"in one process, {args.pairs} pairs, each sample >= {MIN_SAMPLE_S * 1000:.0f} ms; "
        "ratio = median of per-pair time(unoptimized) / time(optimized), [quartiles]; above 1 "
        "the optimized graph is faster. Measured on a shared 2-core machine with other jobs "
        "running: treat the ratios as indicative until re-run on a quiet machine.\n\n"
        + _results.table(
            [
                "model",
                "step",
                "ORT level",
                "nodes",
                "rows/s unoptimized",
                "rows/s optimized",
                "speed-up",
            ],
            rows,
        )  # fmt: skip
        + "\n\nRegenerate: `python -m benchmarks.label.bench_throughput --pairs 15 --threads 1`"
        " (on a quiet machine: add `--pairs 41`, and `--threads N` for N free cores)\n"
    )
    _results.write("throughput", data, md)
    print(md)
    return data


if __name__ == "__main__":
    main()
