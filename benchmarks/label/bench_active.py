"""Active learning curves: test accuracy against labels bought, each strategy against random
sampling, the model retrained and run through graphopt's optimized graph at every step.

Digits, split into a pool (75%) and a test set (25%) per seed. Every strategy starts from
the same 20 random labelled rows and buys 20 more per step for 10 steps (220 labels in the
end). At each step the digits MLP is trained from scratch on the labelled rows, written to
ONNX and loaded as a :class:`optimizer.label.LabelModel` (optimized and checked); its
predictions on the pool (probabilities, penultimate-layer embeddings, or 20 Monte Carlo
dropout samples drawn in one run per batch) choose the next rows, and its accuracy on the
test set is recorded. Curves are averaged over seeds.

    python -m benchmarks.label.bench_active [--seeds 5] [--steps 10] [--batch 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.label import _results
from benchmarks.label.digits import load_digits_data, mlp_to_onnx, train_mlp
from optimizer.label import LabelModel, select

STRATEGIES = ("random", "least_confidence", "margin", "entropy", "bald", "coreset")
INITIAL = 20
MC_SAMPLES = 20


def curve(strategy: str, x_pool, y_pool, x_test, y_test, initial, steps, batch, seed):
    """Test accuracy after each purchase (the first entry: the initial labels only)."""
    labelled = np.zeros(len(x_pool), dtype=bool)
    labelled[initial] = True
    accuracies = []
    for step in range(steps + 1):
        rows = np.flatnonzero(labelled)
        model = train_mlp(x_pool[rows], y_pool[rows], seed=seed * 1000 + step, epochs=60)
        labeller = LabelModel(mlp_to_onnx(model))
        accuracies.append(
            float((labeller.predict(x_test, embeddings=False).labels == y_test).mean())
        )
        if step == steps:
            break
        if strategy == "bald":
            mc = labeller.mc_dropout(x_pool, samples=MC_SAMPLES, seed=seed, batch_size=256)
            choice = select(batch, "bald", bald_scores=mc.stats.bald, probs=mc.mean,
                            labeled=labelled)  # fmt: skip
        else:
            pred = labeller.predict(x_pool, embeddings=strategy == "coreset")
            choice = select(batch, strategy, probs=pred.probabilities, embeddings=pred.embeddings,
                            labeled=labelled, seed=seed * 1000 + step)  # fmt: skip
        labelled[choice.indices] = True
    return accuracies


def main(argv: list[str] | None = None) -> dict:
    from sklearn.model_selection import train_test_split

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args(argv)
    x, y = load_digits_data()
    curves: dict[str, list[list[float]]] = {s: [] for s in STRATEGIES}
    start = time.perf_counter()
    for seed in range(args.seeds):
        x_pool, x_test, y_pool, y_test = train_test_split(
            x, y, test_size=0.25, stratify=y, random_state=seed
        )
        initial = np.random.default_rng(seed).choice(len(x_pool), INITIAL, replace=False)
        for strategy in STRATEGIES:
            acc = curve(strategy, x_pool, y_pool, x_test, y_test, initial, args.steps,
                        args.batch, seed)  # fmt: skip
            curves[strategy].append(acc)
            print(f"seed {seed} {strategy:16s} " + " ".join(f"{a:.3f}" for a in acc), flush=True)
    labels = [INITIAL + args.batch * k for k in range(args.steps + 1)]
    mean = {s: np.mean(curves[s], axis=0).tolist() for s in STRATEGIES}
    above = {
        s: all(mean[s][k] > mean["random"][k] for k in range(1, args.steps + 1))
        for s in STRATEGIES
        if s != "random"
    }
    data = {
        "benchmark": "active learning on digits: accuracy vs labels bought",
        "labels": labels,
        "seeds": args.seeds,
        "mc_samples": MC_SAMPLES,
        "mean_accuracy": mean,
        "curves": curves,
        "above_random_at_every_step": above,
        "seconds": time.perf_counter() - start,
    }
    header = ["labels"] + list(STRATEGIES)
    rows = [[labels[k]] + [mean[s][k] for s in STRATEGIES] for k in range(len(labels))]
    verdict = ", ".join(f"{s}: {'yes' if ok else 'no'}" for s, ok in above.items())
    md = (
        "### Active learning: test accuracy against labels bought (digits)\n\n"
        f"Pool 75% / test 25%; 20 random initial labels, {args.batch} bought per step; the MLP "
        "retrained from scratch at each step and run through graphopt's optimized graph "
        f"(BALD: {MC_SAMPLES} Monte Carlo dropout samples drawn in one run per batch; coreset: "
        f"greedy k-center on penultimate-layer embeddings); mean of {args.seeds} seeds (pool "
        "split, initial labels and training seeds shared by every strategy).\n\n"
        + _results.table(header, rows)
        + f"\n\nAbove random sampling at every step after the first purchase: {verdict}.\n\n"
        "Regenerate: `python -m benchmarks.label.bench_active`\n"
    )
    _results.write("active_learning", data, md)
    print(md)
    return data


if __name__ == "__main__":
    main()
