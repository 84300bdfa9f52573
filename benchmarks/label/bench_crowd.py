"""Crowd aggregation with simulated annotators of known accuracy (0.3 to 0.9): majority vote,
Dawid-Skene and MACE, with and without the model as one more annotator.

Items are scikit-learn's digits (true labels known, 10 classes). Each of 20 annotators gets an
accuracy drawn uniformly from [0.3, 0.9]; each item is labelled by 5 annotators drawn at
random. A wrong answer follows one of two error models:

- ``systematic``: each annotator confuses each class with others in a personal pattern (a
  Dirichlet(0.3) distribution over the other classes per true class: one annotator writes 7
  for 1, another 4 for 9), the errors real annotators make and the model Dawid-Skene fits;
- ``uniform``: a uniformly drawn other class (the "one-coin" model MACE fits).

"With model": the digits MLP's out-of-fold prediction of each item (5-fold cross-validation on
the true labels, run through graphopt's optimized graph) joins as one more annotator.
crowd-kit's implementations are added as a reference when it is importable (optional).

    python -m benchmarks.label.bench_crowd [--seeds 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.label import _results
from benchmarks.label.digits import load_digits_data, mlp_to_onnx, train_mlp
from optimizer.label import CrowdLabels, LabelModel, dawid_skene, mace, majority_vote

ANNOTATORS = 20
PER_ITEM = 5
ACCURACY = (0.3, 0.9)
METHODS = {"majority_vote": majority_vote, "dawid_skene": dawid_skene, "mace": mace}


def simulate(truth: np.ndarray, seed: int, errors: str, num_classes: int = 10):
    """(item, annotator, label) records and the annotators' true accuracies."""
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
    return records, accuracy


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


def accuracy_of(result, truth: np.ndarray) -> float:
    items = np.array([int(i) for i in result.crowd.item_names])
    return float((result.labels == truth[items]).mean())


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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    x, y = load_digits_data()
    runs = []
    for seed in range(args.seeds):
        votes = model_votes(x, y, seed)
        for errors in ("systematic", "uniform"):
            records, true_acc = simulate(y, seed, errors)
            crowd = CrowdLabels.from_records(records, num_classes=10)
            with_model = crowd.with_annotator("model", list(range(len(y))), votes)
            run = {"seed": seed, "errors": errors, "model_accuracy": float((votes == y).mean())}
            for name, method in METHODS.items():
                start = time.perf_counter()
                result = method(crowd)
                run[name] = accuracy_of(result, y)
                run[f"{name}_seconds"] = time.perf_counter() - start
                run[f"{name}+model"] = accuracy_of(method(with_model), y)
                if name != "majority_vote":
                    order = [int(a[1:]) for a in crowd.annotator_names]
                    run[f"{name}_skill_corr"] = float(
                        np.corrcoef(result.skills, true_acc[order])[0, 1]
                    )
            run["crowdkit"] = crowdkit_accuracies(records, y)
            runs.append(run)
            print(
                f"seed {seed} {errors:10s}: MV {run['majority_vote']:.4f} "
                f"DS {run['dawid_skene']:.4f} MACE {run['mace']:.4f} "
                f"(+model: MV {run['majority_vote+model']:.4f} DS {run['dawid_skene+model']:.4f} "
                f"MACE {run['mace+model']:.4f})"
            )
    mean: dict[str, dict[str, float]] = {}
    rows = []
    for errors in ("systematic", "uniform"):
        sel = [r for r in runs if r["errors"] == errors]
        keys = [k for k in sel[0] if k in METHODS or k.endswith("+model") or "corr" in k]
        mean[errors] = {k: float(np.mean([r[k] for r in sel])) for k in keys}
        ck = [r["crowdkit"] for r in sel if r["crowdkit"]]
        if ck:
            mean[errors]["crowdkit"] = {k: float(np.mean([c[k] for c in ck])) for k in ck[0]}
        m = mean[errors]
        rows.append(
            [errors, m["majority_vote"], m["dawid_skene"], m["mace"],
             100 * (m["dawid_skene"] - m["majority_vote"]), m["majority_vote+model"],
             m["dawid_skene+model"], m["mace+model"]]
        )  # fmt: skip
    gain = 100 * (mean["systematic"]["dawid_skene"] - mean["systematic"]["majority_vote"])
    data = {
        "benchmark": "crowd aggregation, simulated annotators, digits truth",
        "annotators": ANNOTATORS,
        "labels_per_item": PER_ITEM,
        "accuracy_range": ACCURACY,
        "seeds": args.seeds,
        "runs": runs,
        "mean": mean,
        "ds_gain_points_systematic": gain,
        "ds_beats_mv_by_3_points": gain >= 3,
    }
    model_acc = float(np.mean([r["model_accuracy"] for r in runs]))
    ck_line = ""
    if "crowdkit" in mean["systematic"]:
        ck = mean["systematic"]["crowdkit"]
        ck_line = (
            f"\n\ncrowd-kit on the same records (systematic errors): MV {ck['majority_vote']:.3f},"
            f" DS {ck['dawid_skene']:.3f}, MACE {ck['mace']:.3f}."
        )
    corr = mean["systematic"]
    md = (
        "### Crowd aggregation: simulated annotators of known accuracy (0.3 to 0.9)\n\n"
        f"Digits (1797 items, 10 classes), {ANNOTATORS} annotators with accuracies uniform in "
        f"[0.3, 0.9], {PER_ITEM} labels per item; mean accuracy against the true labels over "
        f"{args.seeds} seeds. '+ model': the digits MLP's out-of-fold predictions (accuracy "
        f"{model_acc:.3f}) join as one more annotator.\n\n"
        + _results.table(
            [
                "errors",
                "MV",
                "DS",
                "MACE",
                "DS - MV (points)",
                "MV + model",
                "DS + model",
                "MACE + model",
            ],
            rows,
        )  # fmt: skip
        + f"\n\nDawid-Skene beats majority vote by {gain:.1f} points with systematic errors "
        f"(criterion: 3 or more: **{'met' if gain >= 3 else 'not met'}**). With uniform errors "
        "over 10 classes (the one-coin model) the per-annotator confusion matrices have nothing "
        "to find but accuracy, and Dawid-Skene's 90 free parameters per annotator cost about "
        "what they gain; MACE, which fits exactly one competence per annotator, is the "
        "skill-aware method to use there. Estimated skills against the true accuracies "
        f"(correlation, systematic): DS {corr['dawid_skene_skill_corr']:.3f}, MACE "
        f"{corr['mace_skill_corr']:.3f}."
        + ck_line
        + "\n\nRegenerate: `python -m benchmarks.label.bench_crowd`\n"
    )
    _results.write("crowd", data, md)
    print(md)
    return data


if __name__ == "__main__":
    main()
