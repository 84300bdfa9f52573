"""Do the cost models rank candidate graphs like their measured latency?

``python -m benchmarks.cost_rank [--models resnet_tiny,bert_tiny] [--walks 8] [--unfused 4]
[--long-walks 6]``

For each model (default: the ``quick`` suite plus resnet50, bert_base and squeezenet1_1, from
the zoo's cached ONNX exports; a missing export takes up to a minute), a sample of candidate
graphs is built:

- *search* candidates, the way a search meets them: the input, the greedy search's result, and
  ``--walks`` random walks of 1 to ``--steps`` (default max(6, nodes / 10)) rewrites of the
  shipped rule library (``default_rules()`` + ``MatchIndex.matches`` + ``apply_match``;
  commutations, which change nothing onnxruntime sees, are left out), each followed by
  constant folding;
- ``--unfused`` more with some of the fusions onnxruntime makes undone (a Conv's bias as an
  Add, LayerNormalization and Gelu spelled out in primitive ops), some followed by a walk:
  what per-op sums miss by construction;
- ``--long-walks`` more random walks of ``--steps`` + 1 to 3 x ``--steps`` rewrites: the
  costlier graphs a search also weighs and rejects (TASO's relaxed search explores graphs up
  to 1.05x costlier than its best, and a search's later steps start from earlier ones).

Three samples are scored. *search* (input, greedy, walks) and *all* (search + unfused) are
the samples of the first runs. On models where every short walk lands within 3% of the
input (BERT, Llama), timing noise decides that ranking (test-retest near 0): *wide* (all
of the above, long walks included) spreads the candidates over more than the noise, so its
figure measures ranking rather than noise. No candidate is ever dropped for its estimates
or its latency; only duplicates and those onnxruntime refuses.

Duplicates are dropped (by structure). Every candidate is then

- priced by the measured cost model (per-op onnxruntime timings, cached), the analytic model
  (FLOP-equivalents) and the analytic model calibrated on this machine (seconds), and again
  by a second measured model that times every node anew, without the cache (skipped with
  ``--no-measured-retest``): the rho between the two, *est. retest*, is the noise of the
  measured model's own timings;
- timed end to end on onnxruntime at ORT_ENABLE_ALL against the input, interleaved in one
  process (:func:`optimizer.cost.rerank.rerank`, ``--batch`` candidates at a time, each batch
  with the input as reference); its latency is relative to the input's (1 / speedup, a median
  of per-round ratios, which cancels drift), the input's being the median of three sessions
  of it timed with the batch (the reference and ``--anchors`` more, :func:`baseline`). At
  least ``--rounds`` rounds, and more for fast models, so that each candidate is timed
  ``--min-seconds`` in all per pass (:func:`rounds_for`): sub-millisecond candidates differ
  by microseconds, which 10 rounds of 30 ms on a shared machine cannot rank.

The result per model is Spearman's rank correlation (scipy.stats.spearmanr) between each
model's estimates and the latencies, over the search candidates and over all of them; the
issue asks for >= 0.8 from the measured model. Candidates onnxruntime refuses to load are
dropped and listed. Writes ``benchmarks/results/cost_rank.json`` and ``cost_rank.md``
(``--out``). Timings on a shared machine are noisy: the Markdown gives the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from benchmarks._document import start_document
from optimizer import onnx_io
from optimizer.cost.analytic import AnalyticCost
from optimizer.cost.device import DeviceSpec
from optimizer.cost.measured import MeasuredCost
from optimizer.cost.rerank import rerank
from optimizer.errors import CheckUnavailableError
from optimizer.ir import REGISTRY, Graph, Node, TensorData, Value, constant, transform
from optimizer.passes import fold_constants, run_passes
from optimizer.passes.rewrite import apply_rules, default_rules
from optimizer.rewrite.apply import apply_match
from optimizer.runtime import input_specs, make_session, random_inputs

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "results"
EXTRA_MODELS = ("resnet50", "bert_base", "squeezenet1_1")
#: Rules whose rewrites onnxruntime cannot tell apart from the input (operand order).
NEUTRAL_SUFFIXES = ("-commute",)


def default_models() -> list[str]:
    from benchmarks import models

    return list(dict.fromkeys([*models.SUITES["quick"], *EXTRA_MODELS]))


def _fold(graph: Graph) -> Graph:
    # No size limit: onnxruntime 1.32 at ORT_ENABLE_BASIC and above cannot load a model whose
    # Conv weight is a Pad of an initializer (its Pad fusion drops the Pad and leaves the Conv
    # reading a name nothing defines), which kernel enlargement leaves when the padded weight
    # exceeds the default folding limit (ResNet-50's 2048x1024 downsample).
    return fold_constants(graph, size_limit=2**62)


def random_walk(graph: Graph, steps: int, rng: random.Random) -> tuple[Graph, list[str]]:
    """Apply up to ``steps`` random non-neutral rewrites; returns the graph and the rules."""
    index = default_rules()
    opset = graph.meta.opset("")
    applied: list[str] = []
    for _ in range(steps):
        matches = [
            m for m in index.matches(graph, opset=opset)
            if not m.rule.name.endswith(NEUTRAL_SUFFIXES)
        ]  # fmt: skip
        rng.shuffle(matches)
        for match in matches[:20]:  # a few tries: some matches do not apply
            candidate = apply_match(graph, match, opset=opset)
            if candidate is not None:
                graph = candidate
                applied.append(match.rule.name)
                break
        else:
            break
    return (_fold(graph) if applied else graph), applied


def _make(op: str, inputs: list, attrs: dict | None = None, opset: int = 17) -> Value:
    """One output of a new node, typed by the IR's type functions."""
    probe = Node.make(op, inputs, attrs or {})
    types = REGISTRY.infer(probe, opset)
    if not types:
        raise ValueError(f"cannot type {op}")
    return Node.make(op, inputs, attrs or {}, output_types=types).outputs[0]


def _scalar(value: float, like: Value) -> Value:
    return constant(TensorData.from_array(np.array(value, dtype=like.type.dtype.to_numpy())))


def _ints(values: list[int]) -> Value:
    return constant(TensorData.from_array(np.array(values, dtype=np.int64)))


def _unfused(node: Node, ins: list[Value | None], opset: int) -> list[Value] | None:
    """The primitive ops a fused op stands for (what an exporter or a search might leave):
    LayerNormalization over the last axis, exact Gelu, Conv's bias as an Add; None when
    ``node`` is none of these."""

    def mk(op: str, inputs: list, attrs: dict | None = None) -> Value:
        return _make(op, inputs, attrs, opset)

    if node.op == "LayerNormalization" and node.attr("axis", -1) == -1 and len(ins) == 3:
        x, scale, bias = ins
        if len(node.outputs) != 1 or None in (x, scale, bias):
            return None
        axes = {"keepdims": 1}
        mean_of = (
            (lambda v: mk("ReduceMean", [v, _ints([-1])], axes))
            if opset >= 18
            else (lambda v: mk("ReduceMean", [v], {**axes, "axes": [-1]}))
        )
        centred = mk("Sub", [x, mean_of(x)])
        var = mean_of(mk("Pow", [centred, _scalar(2.0, x)]))
        std = mk("Sqrt", [mk("Add", [var, _scalar(node.attr("epsilon", 1e-5), x)])])
        return [mk("Add", [mk("Mul", [mk("Div", [centred, std]), scale]), bias])]
    if node.op == "Gelu" and node.attr("approximate", b"none") == b"none":
        (x,) = ins
        erf = mk("Erf", [mk("Div", [x, _scalar(1.4142135381698608, x)])])
        return [mk("Mul", [mk("Mul", [x, mk("Add", [erf, _scalar(1.0, x)])]), _scalar(0.5, x)])]
    if node.op == "Conv" and len(ins) == 3 and ins[2] is not None and ins[0].type.rank:
        x, w, b = ins
        bare = mk("Conv", [x, w], dict(node.attrs))
        shape = [1, -1] + [1] * (x.type.rank - 2)
        return [mk("Add", [bare, mk("Reshape", [b, _ints(shape)])])]
    return None


def unfuse(graph: Graph, fraction: float, rng: random.Random) -> tuple[Graph, int]:
    """``graph`` with about ``fraction`` of its fused ops spelled out (see :func:`_unfused`);
    returns it and how many were."""
    opset = graph.meta.opset("") or 17
    count = 0

    def rewrite(node: Node, ins: list[Value | None]) -> list[Value] | None:
        nonlocal count
        if node.op not in ("LayerNormalization", "Gelu", "Conv") or rng.random() >= fraction:
            return None
        try:
            values = _unfused(node, ins, opset)
        except ValueError:
            return None
        count += values is not None
        return values

    return transform(graph, rewrite, provenance="unfuse"), count


#: Which candidate kinds each scored sample holds (see the module docstring).
GROUPS: dict[str, tuple[str, ...]] = {
    "search": ("input", "greedy", "walk"),
    "all": ("input", "greedy", "walk", "unfused"),
    "wide": ("input", "greedy", "walk", "unfused", "long"),
}


def candidates(
    graph: Graph, walks: int, unfused: int, max_steps: int, seed: int, long_walks: int = 0
) -> list[dict[str, Any]]:
    """The input, the greedy result, ``walks`` random walks ("search" candidates: what a
    search meets), ``unfused`` graphs with fusions undone, some followed by a walk, and
    ``long_walks`` walks of ``max_steps`` + 1 to 3 x ``max_steps`` rewrites, without
    duplicates (by structure). The first kinds are drawn before the long walks, so a seed
    gives the same search and unfused candidates whatever ``long_walks`` is."""
    rng = random.Random(seed)
    found: list[dict[str, Any]] = [{"kind": "input", "rules": [], "graph": graph}]
    seen = {graph.key}
    greedy, trace = apply_rules(graph, default_rules())
    if greedy.key not in seen:
        seen.add(greedy.key)
        found.append({"kind": "greedy", "rules": [t["rule"] for t in trace], "graph": greedy})
    for kind, wanted in (("walk", walks), ("unfused", unfused), ("long", long_walks)):
        made = tries = 0
        while made < wanted and tries < 4 * wanted:
            tries += 1
            start, rules = graph, []
            if kind == "unfused":
                start, undone = unfuse(graph, rng.choice((0.25, 0.5, 1.0)), rng)
                if not undone:
                    break  # nothing to undo in this model
                rules = [f"unfuse x{undone}"]
            low, high = {"walk": (1, max_steps), "unfused": (0, max_steps),
                         "long": (max_steps + 1, 3 * max_steps)}[kind]  # fmt: skip
            walked, applied = random_walk(start, rng.randint(low, high), rng)
            if walked.key in seen:
                continue
            seen.add(walked.key)
            made += 1
            found.append({"kind": kind, "rules": rules + applied, "graph": walked})
    return found


def _time(batch: list[dict[str, Any]], reference, device: DeviceSpec, rounds: int, args) -> list:
    """Speedups over ``reference`` of the batch's candidates, in batch order, each divided by
    the batch's baseline (:func:`baseline`): ``args.anchors`` more sessions of the reference
    are timed with the batch."""
    anchors = [reference] * args.anchors
    ranked = sorted(
        rerank(
            [c["graph"] for c in batch] + anchors, reference, device=device, rounds=rounds,
            sample_seconds=args.sample_seconds,
        ),
        key=lambda r: r.index,
    )  # fmt: skip
    base = baseline([r.speedup for r in ranked[len(batch) :]])
    return [replace(r, speedup=r.speedup * base, speedup_q1=r.speedup_q1 * base,
                    speedup_q3=r.speedup_q3 * base) for r in ranked[: len(batch)]]  # fmt: skip


def baseline(anchor_speedups: list[float]) -> float:
    """The latency of the input in a batch relative to its reference session: the median of
    the reference (1) and of the other sessions of the input (latency 1 / speedup).

    Two sessions of one model can run several percent apart for a whole batch (nasrnn_tiny:
    one reference session 15% slower than five others, among them a session of the very same
    model), which shifts every candidate of the batch against those of the other batches;
    the median of three sessions of the input is off only when two of them are."""
    return statistics.median([1.0, *(1 / s for s in anchor_speedups)])


def rounds_for(call_seconds: float, rounds: int, sample_seconds: float, min_seconds: float) -> int:
    """Rounds of interleaved timing for a model whose run takes ``call_seconds``: at least
    ``rounds``, and enough that each candidate is timed for ``min_seconds`` in all (a sample
    lasts ``sample_seconds`` or one run, whichever is longer). A sub-millisecond model's
    candidates differ by a few microseconds, less than a few rounds' noise on a shared
    machine; more rounds make the median of the per-round ratios steadier."""
    per_sample = max(sample_seconds, call_seconds)
    return max(rounds, math.ceil(min_seconds / per_sample))


def _call_seconds(reference, device: DeviceSpec, calls: int = 5) -> float:
    """The fastest of ``calls`` runs of ``reference`` at ORT_ENABLE_ALL (random inputs)."""
    session = make_session(reference, device=device.device,
                           options=device.with_opt_level("all").session_options())  # fmt: skip
    feed = random_inputs(input_specs(session), seed=0)
    session.run(None, feed)
    best = math.inf
    for _ in range(calls):
        start = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - start)
    return best


def _refusal(graph: Graph, device: DeviceSpec) -> str | None:
    """Why onnxruntime (at ORT_ENABLE_ALL) cannot load ``graph``, or None when it can."""
    try:
        make_session(onnx_io.to_proto(graph), device=device.device,
                     options=device.with_opt_level("all").session_options())  # fmt: skip
    except CheckUnavailableError as exc:
        return str(exc).splitlines()[0][:300]
    return None


def _geomean_latency(speedups: list[float]) -> float:
    """Latency relative to the input from speedups over it: 1 / their geometric mean."""
    return math.exp(-sum(map(math.log, speedups)) / len(speedups))


def _spearman(xs: list[float], ys: list[float]) -> tuple[float | None, float | None]:
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None, None
    rho, p = spearmanr(xs, ys)
    return (None if math.isnan(rho) else float(rho)), (None if math.isnan(p) else float(p))


def bench_model(name: str, args: argparse.Namespace, device: DeviceSpec) -> dict[str, Any]:
    from benchmarks import models

    start = time.perf_counter()
    path = models.export(name)
    graph, _ = onnx_io.load(path)
    graph, _ = run_passes(graph, ("eliminate-identity", "fold-constants"))
    steps = args.steps or max(6, len(graph.nodes()) // 10)
    sample = candidates(graph, args.walks, args.unfused, steps, args.seed, args.long_walks)
    measured = MeasuredCost(device, cache=args.cache)
    analytic = AnalyticCost()
    calibrated = AnalyticCost.calibrated(device.device, threads=device.threads,
                                         cache_dir=args.cache)  # fmt: skip
    t_cost = time.perf_counter()
    for c in sample:
        c["measured_s"] = measured(c["graph"])
        c["analytic"] = analytic(c["graph"])
        c["analytic_calibrated_s"] = calibrated(c["graph"])
        c["nodes"] = len(c["graph"].nodes())
    cost_seconds = time.perf_counter() - t_cost
    if args.measured_retest:
        # The measured model's own noise: every node timed again by a second model that
        # neither reads nor writes the cache.
        again = MeasuredCost(device, cache=args.cache, use_cache=False)
        for c in sample:
            c["measured_again_s"] = again(c["graph"])
    reference = onnx_io.to_proto(graph)
    ref_latency = None
    rounds = rounds_for(
        _call_seconds(reference, device), args.rounds, args.sample_seconds, args.min_seconds
    )
    # Every batch is timed against the same reference, so speedups compare across batches;
    # batches bound the number of sessions alive at once (BERT-base: ~0.5 GB each).
    for repeat in range(args.repeats):
        for first in range(0, len(sample), args.batch):
            batch = [c for c in sample[first : first + args.batch] if not c.get("refused")]
            try:
                ranked = _time(batch, reference, device, rounds, args)
            except CheckUnavailableError:
                for c in batch:  # find the candidates onnxruntime refuses, time the rest
                    c["refused"] = _refusal(c["graph"], device)
                batch = [c for c in batch if c["refused"] is None]
                ranked = _time(batch, reference, device, rounds, args)
            for r in ranked:
                c = batch[r.index]
                c.setdefault("speedups", []).append(r.speedup)
                c.setdefault("speedup_iqr", []).append([r.speedup_q1, r.speedup_q3])
                if c["kind"] == "input" and repeat == 0:
                    ref_latency = r.latency_ms  # the input's median latency
    refused = [c for c in sample if c.get("refused")]
    sample = [c for c in sample if not c.get("refused")]
    for c in sample:  # geometric mean over the repeats
        c["relative_latency"] = _geomean_latency(c["speedups"])
    result: dict[str, Any] = {"name": name, "candidates": len(sample), "max_steps": steps,
                              "reference_latency_ms": ref_latency, "rounds": rounds}  # fmt: skip
    for group, kinds in GROUPS.items():
        members = [c for c in sample if c["kind"] in kinds]
        result[f"{group}_candidates"] = len(members)
        rel = [c["relative_latency"] for c in members]
        result[f"{group}_latency_spread"] = [min(rel), max(rel)]
        if args.repeats > 1:  # test-retest: how well latency ranks itself (the noise ceiling)
            # Split halves (even and odd passes, each a geometric mean): with four passes
            # each half is as steady as a two-pass latency, the retest of what is scored.
            first_run = [_geomean_latency(c["speedups"][0::2]) for c in members]
            second_run = [_geomean_latency(c["speedups"][1::2]) for c in members]
            result[f"{group}_latency_retest"] = _spearman(first_run, second_run)[0]
        if args.measured_retest:  # how well the measured model ranks its own estimates
            result[f"{group}_measured_retest"] = _spearman(
                [c["measured_s"] for c in members], [c["measured_again_s"] for c in members]
            )[0]
        for key in ("measured_s", "analytic", "analytic_calibrated_s"):
            rho, p = _spearman([c[key] for c in members], rel)
            result[f"{group}_spearman_{key.removesuffix('_s')}"] = rho
            result[f"{group}_p_{key.removesuffix('_s')}"] = p
    result["refused_by_onnxruntime"] = [
        {"kind": c["kind"], "rules": c["rules"], "error": c["refused"]} for c in refused
    ]
    result["measured_cost_seconds"] = round(cost_seconds, 2)
    result["measured_stats"] = {k: round(v, 3) if isinstance(v, float) else v
                                for k, v in measured.stats.items()}  # fmt: skip
    result["symbols"] = sorted(measured.symbols)
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["sample"] = [
        {k: (round(v, 9) if isinstance(v, float) else v) for k, v in c.items() if k != "graph"}
        for c in sample
    ]
    return result


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _table(document: dict[str, Any], groups: tuple[str, ...], pricing: bool) -> list[str]:
    """One row per model: n, rho of each cost model, spread and retest per group."""
    head = "| model | input latency |"
    rule = "|---|---:|"
    for group in groups:
        head += (
            f" {group}: n | measured | est. retest | analytic cal. | analytic | spread | retest |"
        )
        rule += "---:|" * 7
    if pricing:
        head, rule = head + " pricing |", rule + "---:|"
    lines = [head, rule]
    for m in document["models"]:
        if "error" in m:
            lines.append(f"| {m['name']} | error: {m['error']} |" + " |" * (7 * len(groups)))
            continue
        lat = m["reference_latency_ms"]
        cells = [m["name"], "-" if lat is None else f"{lat:.2f} ms"]
        for group in groups:
            if f"{group}_candidates" not in m:  # a document from before this group existed
                cells += ["-"] * 7
                continue
            lo, hi = m[f"{group}_latency_spread"]
            cells += [
                str(m[f"{group}_candidates"]),
                _fmt(m[f"{group}_spearman_measured"]),
                _fmt(m.get(f"{group}_measured_retest")),
                _fmt(m[f"{group}_spearman_analytic_calibrated"]),
                _fmt(m[f"{group}_spearman_analytic"]),
                f"{lo:.2f}-{hi:.2f}",
                _fmt(m.get(f"{group}_latency_retest")),
            ]
        if pricing:
            cells.append(f"{m['measured_cost_seconds']:.1f} s")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(document: dict[str, Any]) -> str:
    config = document["config"]
    long_walks = config.get("long_walks", 0)
    lines = [
        "### Cost models: rank correlation with measured latency",
        "",
        f"Machine: {document['machine_line']}; load average (1 min) "
        f"{document['loadavg_start'][0]:.1f} at start, {document['loadavg_end'][0]:.1f} at end. "
        "Per model: the input, the greedy result and "
        f"{config['walks']} random walks of rewrites (*search* candidates), plus "
        f"{config['unfused']} graphs with Conv bias / LayerNorm / Gelu fusions undone "
        f"(*all*), plus {long_walks} longer walks (steps + 1 to 3 x steps rewrites: the "
        "costlier graphs a search also weighs and rejects; *wide* = all of them). "
        "Each candidate is timed end to end on onnxruntime at ORT_ENABLE_ALL, "
        f"interleaved with the input (at least {config['rounds']} rounds, and at least "
        f"{config.get('min_seconds', 0):g} s per candidate; the input's latency is the median "
        f"of {1 + config.get('anchors', 0)} sessions of it timed with each batch; "
        "relative latency = 1 / "
        "speedup). The figures are Spearman's rho between each cost model's estimates and the "
        "latencies (target for the measured model: >= 0.8); *spread* is the range of latencies "
        "relative to the input; *retest* is the rho between the latencies of the even and "
        f"the odd passes ({config['repeats']} passes, latency = their geometric mean): the "
        "noise ceiling, "
        "since no estimate can rank latencies better than they rank themselves; *est. "
        "retest* is the rho between the measured model's estimates and those of a second "
        "measured model that times every node again (no cache): the noise of its timings. "
        "Where the "
        "spread is a few percent, the retest is low and rho measures noise: the *wide* sample "
        "is there to spread the candidates wider than the noise. No candidate is dropped for "
        "its estimates or latency.",
        "",
        *_table(document, ("search", "all"), pricing=True),
        "",
        "Wide sample (search + unfused + long walks):",
        "",
        *_table(document, ("wide",), pricing=False),
    ]
    s = document["summary"]
    lines.append("")
    for group in GROUPS:
        if f"{group}_mean_measured" not in s:
            continue
        lines.append(
            f"Mean rho over {group} candidates: measured {_fmt(s[f'{group}_mean_measured'])}, "
            f"calibrated analytic {_fmt(s[f'{group}_mean_analytic_calibrated'])}, analytic "
            f"{_fmt(s[f'{group}_mean_analytic'])}; latency retest "
            f"{_fmt(s[f'{group}_mean_retest'])}; measured rho >= 0.8 on "
            f"{s[f'{group}_measured_at_least_0.8']} of {s['models']} models."
        )
        lines.append("")
    lines += [
        "*pricing*: seconds the measured model took to price all candidates of the model "
        "(first run, empty cache).",
        "",
        f"Rerun on a quiet machine: `{document['command']}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated zoo models (default: quick + 3)")
    parser.add_argument("--walks", type=int, default=8, help="random-walk candidates")
    parser.add_argument("--unfused", type=int, default=4, help="candidates with fusions undone")
    parser.add_argument(
        "--long-walks", type=int, default=6, help="walks of steps + 1 to 3 x steps rewrites"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="longest walk (default: max(6, nodes / 10))"
    )
    parser.add_argument("--rounds", type=int, default=10, help="fewest rounds of timing")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=2.0,
        help="time each candidate at least this long per repeat (more rounds for fast models)",
    )
    parser.add_argument("--sample-seconds", type=float, default=0.03)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=5, help="candidates timed together")
    parser.add_argument(
        "--anchors",
        type=int,
        default=2,
        help="more sessions of the input timed with each batch (their median is its baseline)",
    )
    parser.add_argument(
        "--repeats", type=int, default=4, help="time every candidate this many times"
    )
    parser.add_argument(
        "--no-measured-retest",
        dest="measured_retest",
        action="store_false",
        help="do not price every candidate a second time without the cache",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", default=None, help="cost cache folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    names = [m.strip() for m in args.models.split(",")] if args.models else default_models()
    device = DeviceSpec(args.device, args.threads)
    document = start_document("graphopt-cost-rank/1", "benchmarks.cost_rank", args, argv, device)
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        try:
            entry = bench_model(name, args, device)
        except Exception as exc:  # noqa: BLE001 - one model's failure must not stop the rest
            entry = {"name": name, "error": f"{type(exc).__name__}: {exc}"[:300]}
        document["models"].append(entry)
        print(
            f"  rho (search / all / wide): measured "
            f"{_fmt(entry.get('search_spearman_measured'))} / "
            f"{_fmt(entry.get('all_spearman_measured'))} / "
            f"{_fmt(entry.get('wide_spearman_measured'))}, analytic "
            f"{_fmt(entry.get('search_spearman_analytic'))} / "
            f"{_fmt(entry.get('all_spearman_analytic'))} / "
            f"{_fmt(entry.get('wide_spearman_analytic'))} ({entry.get('seconds')} s)"
            + (f" error: {entry['error']}" if "error" in entry else ""),
            file=sys.stderr, flush=True,
        )  # fmt: skip
    document["loadavg_end"] = list(os.getloadavg())
    ok = [m for m in document["models"] if "error" not in m]

    def mean(key: str) -> float | None:
        values = [m[key] for m in ok if m.get(key) is not None]
        return sum(values) / len(values) if values else None

    document["summary"] = {"models": len(ok)}
    for group in GROUPS:
        for key in ("measured", "analytic", "analytic_calibrated"):
            document["summary"][f"{group}_mean_{key}"] = mean(f"{group}_spearman_{key}")
        document["summary"][f"{group}_mean_retest"] = mean(f"{group}_latency_retest")
        document["summary"][f"{group}_measured_at_least_0.8"] = sum(
            1 for m in ok if (m.get(f"{group}_spearman_measured") or -1) >= 0.8
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cost_rank.json").write_text(json.dumps(document, indent=1) + "\n")
    (args.out / "cost_rank.md").write_text(markdown(document))
    print(markdown(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
