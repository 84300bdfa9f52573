"""Crowd aggregation with simulated annotators of known accuracy (0.3 to 0.9): majority vote,
Dawid-Skene (the default MAP variant, the maximum-likelihood original, one-coin) and MACE,
with and without the model as one more annotator, against the Bayes-optimal oracle.

Items are scikit-learn's digits (true labels known, 10 classes). Each of 20 annotators gets an
accuracy drawn uniformly from [0.3, 0.9]; each item is labelled by 5 annotators drawn at
random. A wrong answer follows one of two error models:

- ``systematic``: each annotator confuses each class with others in a personal pattern (a
  Dirichlet(0.3) distribution over the other classes per true class: one annotator writes 7
  for 1, another 4 for 9), the errors real annotators make and the model Dawid-Skene fits;
- ``uniform``: a uniformly drawn other class (the "one-coin" model MACE fits).

"Oracle": the posterior under the simulation's own parameters (each annotator's true
confusion matrix and the true class frequencies), the best any aggregation of these records
can do on average; its gain over majority vote is the ceiling for every method.

"With model": the digits MLP's out-of-fold prediction of each item (5-fold cross-validation on
the true labels, run through graphopt's optimized graph) joins as one more annotator.
crowd-kit's implementations are added as a reference when it is importable (optional).

    python -m benchmarks.label.bench_crowd [--seeds 5]
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np

from benchmarks.label import _results
from benchmarks.label.digits import load_digits_data, mlp_to_onnx, train_mlp
from optimizer.label import CrowdLabels, LabelModel, dawid_skene, mace, majority_vote
from optimizer.label.crowd import PRIOR_STRENGTH_RANGE

ANNOTATORS = 20
PER_ITEM = 5
ACCURACY = (0.3, 0.9)
ERROR_MODELS = ("systematic", "uniform")
#: Name -> (aggregation, column heading).
METHODS = {
    "majority_vote": (majority_vote, "MV"),
    # The maximum-likelihood Dawid-Skene started from the majority vote: the previous default.
    "ds_ml": (functools.partial(dawid_skene, prior_strength=0, init="majority"), "DS ML (old)"),
    "ds_one_coin": (functools.partial(dawid_skene, model="one-coin"), "DS one-coin"),
    "dawid_skene": (dawid_skene, "DS (default)"),
    "mace": (mace, "MACE"),
}


def simulate(truth: np.ndarray, seed: int, errors: str, num_classes: int = 10):
    """(item, annotator, label) records, the annotators' true accuracies and their true
    confusion matrices (annotators x true x given)."""
    rng = np.random.default_rng(seed)
    accuracy = rng.uniform(*ACCURACY, ANNOTATORS)
    confusion = rng.dirichlet(np.full(num_classes - 1, 0.3), size=(ANNOTATORS, num_classes))
    records = []
    for item, t in enumerate(truth):
        for a in rng.choice(ANNOTATORS, PER_ITEM, replace=False):
            if rng.random() < accuracy[a]:
                label = t
            elif errors == "systematic":
                label = (t + 1 + rng.choice(num_classes - 1, p=confusion[a, t])) % num_classes
            else:
                label = (t + rng.integers(1, num_classes)) % num_classes
            records.append((item, f"a{a:02d}", int(label)))
    return records, accuracy, true_confusions(accuracy, confusion, errors)


def true_confusions(accuracy: np.ndarray, confusion: np.ndarray, errors: str) -> np.ndarray:
    """P(given | true) per annotator, as :func:`simulate` draws the labels."""
    num_annotators, num_classes = confusion.shape[:2]
    out = np.zeros((num_annotators, num_classes, num_classes))
    for t in range(num_classes):
        others = (t + 1 + np.arange(num_classes - 1)) % num_classes
        if errors == "systematic":
            out[:, t, others] = (1 - accuracy)[:, None] * confusion[:, t]
        else:
            out[:, t, others] = ((1 - accuracy) / (num_classes - 1))[:, None]
        out[:, t, t] = accuracy
    return out


def oracle_labels(crowd: CrowdLabels, confusions: np.ndarray, class_prior: np.ndarray):
    """Each item's most probable class under the simulation's true parameters."""
    order = np.array([int(a[1:]) for a in crowd.annotator_names])
    logp = np.tile(np.log(class_prior), (crowd.num_items, 1))
    np.add.at(logp, crowd.items, np.log(confusions[order][crowd.annotators, :, crowd.labels]))
    return logp.argmax(axis=1)


def model_votes(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-fold predictions of the digits MLP (it never votes on an item it trained on)."""
    from sklearn.model_selection import StratifiedKFold

    votes = np.zeros(len(y), dtype=np.int64)
    for k, (train, held) in enumerate(
        StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y)
    ):
        model = train_mlp(x[train], y[train], seed=seed * 10 + k, epochs=30)
        votes[held] = LabelModel(mlp_to_onnx(model), embedding=None).predict(x[held]).labels
    return votes


def accuracy_of(labels: np.ndarray, crowd: CrowdLabels, truth: np.ndarray) -> float:
    items = np.array([int(i) for i in crowd.item_names])
    return float((labels == truth[items]).mean())


def crowdkit_accuracies(records, truth) -> dict[str, float]:
    """crowd-kit's majority vote, Dawid-Skene and MACE on the same records, when installed."""
    try:
        import pandas as pd
        from crowdkit.aggregation import MACE, DawidSkene, MajorityVote
    except Exception:  # noqa: BLE001 - optional reference (crowd-kit and its imports)
        return {}
    frame = pd.DataFrame(records, columns=["task", "worker", "label"])
    out = {}
    for name, agg in (
        ("majority_vote", MajorityVote()),
        ("dawid_skene", DawidSkene(n_iter=500)),
        ("mace", MACE(n_iter=500)),
    ):
        labels = agg.fit_predict(frame).sort_index()
        out[name] = float((labels.to_numpy() == truth[labels.index.to_numpy()]).mean())
    return out


def run_one(crowd, with_model, truth, true_acc, true_conf, class_prior) -> dict:
    """Every method on one simulated crowd: accuracies, times, skill correlations."""
    run: dict = {"oracle": accuracy_of(oracle_labels(crowd, true_conf, class_prior), crowd, truth)}
    order = [int(a[1:]) for a in crowd.annotator_names]
    for name, (method, _) in METHODS.items():
        start = time.perf_counter()
        result = method(crowd)
        run[f"{name}_seconds"] = time.perf_counter() - start
        run[name] = accuracy_of(result.labels, crowd, truth)
        run[f"{name}+model"] = accuracy_of(method(with_model).labels, with_model, truth)
        if name != "majority_vote":
            run[f"{name}_skill_corr"] = float(np.corrcoef(result.skills, true_acc[order])[0, 1])
            run[f"{name}_converged"] = bool(result.converged)
        if name == "dawid_skene":
            run["prior_strength"] = float(result.extra["prior_strength"])
    return run


def _discussion(mean: dict, gain: dict, ceiling: dict, num_items: int) -> str:
    """What the figures say, worded from the figures."""
    uni, sys_ = mean["uniform"], mean["systematic"]
    ml = {e: 100 * (mean[e]["ds_ml"] - mean[e]["majority_vote"]) for e in ERROR_MODELS}
    text = (
        f"With uniform errors the oracle is {ceiling['uniform']:+.1f} points above majority "
        "vote: when every wrong answer is a uniformly drawn other class, all there is to learn "
        "is who is accurate, and with five votes per item majority vote is already close to "
        "the vote weighted by the true accuracies. "
    )
    if ceiling["uniform"] < 3:
        text += "A 3-point margin is therefore out of reach of any method in this setting. "
    text += (
        f"The default is {100 * (uni['oracle'] - uni['dawid_skene']):.2f} points below the "
        f"oracle there (fitted prior strength {uni['prior_strength_median']:.3g} pseudo-counts "
        f"per row; the range ends at {PRIOR_STRENGTH_RANGE[1]:g}, i.e. one-coin); the "
        "maximum-likelihood Dawid-Skene, 90 free confusion cells per annotator fitted from about "
        f"{num_items * PER_ITEM // ANNOTATORS} labels, is at "
        f"{ml['uniform']:+.1f} points. With systematic errors the fitted strength is "
        f"{sys_['prior_strength_median']:.3g} pseudo-counts per row and the default is at "
        f"{gain['systematic']:+.1f} points against the maximum-likelihood model's "
        f"{ml['systematic']:+.1f}; one-coin models (DS one-coin, MACE) cannot represent "
        "these confusions and gain less."
    )
    return text


def summarise(runs: list[dict], seeds: int, num_items: int) -> tuple[dict, str]:
    """Means over the seeds per error model, and the Markdown snippet."""
    mean: dict[str, dict] = {}
    for errors in ERROR_MODELS:
        sel = [r for r in runs if r["errors"] == errors]
        keys = [k for k, v in sel[0].items() if isinstance(v, float) and k != "seed"]
        mean[errors] = {k: float(np.mean([r[k] for r in sel])) for k in keys}
        mean[errors]["prior_strength_median"] = float(np.median([r["prior_strength"] for r in sel]))
        ck = [r["crowdkit"] for r in sel if r["crowdkit"]]
        if ck:
            mean[errors]["crowdkit"] = {k: float(np.mean([c[k] for c in ck])) for k in ck[0]}
    gain = {e: 100 * (mean[e]["dawid_skene"] - mean[e]["majority_vote"]) for e in ERROR_MODELS}
    ceiling = {e: 100 * (mean[e]["oracle"] - mean[e]["majority_vote"]) for e in ERROR_MODELS}
    heads = [head for _, head in METHODS.values()]
    crowd_rows = [
        [e, *(mean[e][n] for n in METHODS), mean[e]["oracle"], gain[e], ceiling[e],
         f"{mean[e]['prior_strength_median']:.3g}"]
        for e in ERROR_MODELS
    ]  # fmt: skip
    model_rows = [[e, *(mean[e][f"{n}+model"] for n in METHODS)] for e in ERROR_MODELS]
    corr_rows = [
        [e, *(mean[e][f"{n}_skill_corr"] for n in METHODS if n != "majority_vote")]
        for e in ERROR_MODELS
    ]
    model_acc = float(np.mean([r["model_accuracy"] for r in runs]))
    met = {e: "met" if gain[e] >= 3 else "not met" for e in ERROR_MODELS}
    ck_line = ""
    if "crowdkit" in mean["systematic"]:
        ck = {e: mean[e]["crowdkit"] for e in ERROR_MODELS}
        ck_line = "\n\ncrowd-kit on the same records: " + "; ".join(
            f"{e}: MV {ck[e]['majority_vote']:.3f}, DS {ck[e]['dawid_skene']:.3f}, "
            f"MACE {ck[e]['mace']:.3f}"
            for e in ERROR_MODELS
        )
    md = (
        "### Crowd aggregation: simulated annotators of known accuracy (0.3 to 0.9)\n\n"
        f"Digits ({num_items} items, 10 classes), {ANNOTATORS} annotators with accuracies "
        f"uniform in [0.3, 0.9], {PER_ITEM} labels per item; mean accuracy against the true "
        f"labels over {seeds} seeds. DS (default): MAP Dawid-Skene, each confusion row under a "
        "Dirichlet prior centred on the annotator's one-coin row, its strength (pseudo-counts "
        "per row; median of the fitted values in the last column) estimated by empirical "
        "Bayes. DS ML: the maximum-likelihood Dawid-Skene from the majority vote (the previous "
        "default). Oracle: the posterior under the simulation's true parameters, the best any "
        "method can do on average.\n\n"
        + _results.table(
            [
                "errors",
                *heads,
                "oracle",
                "DS - MV (points)",
                "oracle - MV (points)",
                "prior strength",
            ],
            crowd_rows,
        )  # fmt: skip
        + f"\n\nWith the digits MLP's out-of-fold predictions (accuracy {model_acc:.3f}) as one "
        "more annotator:\n\n"
        + _results.table(["errors", *heads], model_rows)
        + "\n\nEstimated skills against the true accuracies (correlation):\n\n"
        + _results.table(["errors", *heads[1:]], corr_rows)
        + f"\n\nDawid-Skene (default) against majority vote: {gain['systematic']:+.1f} points "
        f"with systematic errors, {gain['uniform']:+.1f} with uniform errors (criterion: 3 or "
        f"more: **{met['systematic']}** / **{met['uniform']}**). "
        + _discussion(mean, gain, ceiling, num_items)
        + ck_line
        + "\n\nRegenerate: `python -m benchmarks.label.bench_crowd`\n"
    )
    return {"mean": mean, "ds_gain_points": gain, "oracle_gain_points": ceiling}, md


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    x, y = load_digits_data()
    class_prior = np.bincount(y, minlength=10) / len(y)
    runs = []
    for seed in range(args.seeds):
        votes = model_votes(x, y, seed)
        for errors in ERROR_MODELS:
            records, true_acc, true_conf = simulate(y, seed, errors)
            crowd = CrowdLabels.from_records(records, num_classes=10)
            with_model = crowd.with_annotator("model", list(range(len(y))), votes)
            run = {"seed": seed, "errors": errors, "model_accuracy": float((votes == y).mean())}
            run.update(run_one(crowd, with_model, y, true_acc, true_conf, class_prior))
            run["crowdkit"] = crowdkit_accuracies(records, y)
            runs.append(run)
            print(
                f"seed {seed} {errors:10s}: "
                + " ".join(f"{head} {run[n]:.4f}" for n, (_, head) in METHODS.items())
                + f" oracle {run['oracle']:.4f} (prior strength {run['prior_strength']:.3g})",
                flush=True,
            )
    summary, md = summarise(runs, args.seeds, len(y))
    gain = summary["ds_gain_points"]
    data = {
        "benchmark": "crowd aggregation, simulated annotators, digits truth",
        "annotators": ANNOTATORS,
        "labels_per_item": PER_ITEM,
        "accuracy_range": ACCURACY,
        "seeds": args.seeds,
        "methods": {name: head for name, (_, head) in METHODS.items()},
        "runs": runs,
        **summary,
        "ds_gain_points_systematic": gain["systematic"],
        "ds_beats_mv_by_3_points": {e: gain[e] >= 3 for e in ERROR_MODELS},
    }
    _results.write("crowd", data, md)
    print(md)
    return data


if __name__ == "__main__":
    main()
