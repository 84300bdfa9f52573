"""The labelling methods on arrays: uncertainty, active learning, confident learning (checked
against cleanlab on the same probabilities) and crowd aggregation (against known annotators)."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer.label import (
    CrowdLabels,
    LabelDataError,
    bald,
    confident_joint,
    dawid_skene,
    entropy,
    find_label_issues,
    k_center_greedy,
    label_quality_scores,
    least_confidence,
    mace,
    majority_vote,
    margin,
    mc_statistics,
    select,
)

# ---------------------------------------------------------------- uncertainty


def test_one_pass_measures_on_hand_computed_rows():
    probs = np.array([[1.0, 0.0, 0.0], [0.5, 0.3, 0.2], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(least_confidence(probs), [0.0, 0.5, 2 / 3])
    np.testing.assert_allclose(margin(probs), [0.0, 0.8, 1.0])
    expected = -(0.5 * np.log(0.5) + 0.3 * np.log(0.3) + 0.2 * np.log(0.2))
    np.testing.assert_allclose(entropy(probs), [0.0, expected, np.log(3)])


def test_bald_is_zero_when_samples_agree_and_positive_when_they_disagree():
    agree = np.tile(np.array([[0.7, 0.3]]), (5, 1, 1))  # T=5, N=1
    np.testing.assert_allclose(bald(agree), [0.0], atol=1e-12)
    disagree = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # two confident, opposite samples
    np.testing.assert_allclose(bald(disagree), [np.log(2)])
    stats = mc_statistics(np.concatenate([disagree, disagree]))
    np.testing.assert_allclose(stats.mean, [[0.5, 0.5]])
    np.testing.assert_allclose(stats.expected_entropy, [0.0], atol=1e-12)
    np.testing.assert_allclose(stats.variation_ratio, [0.5])


def test_bald_needs_samples():
    with pytest.raises(LabelDataError, match="T x N x C"):
        bald(np.ones((3, 2)))


# ---------------------------------------------------------------- active learning


PROBS = np.array(
    [
        [0.98, 0.01, 0.01],  # sure
        [0.50, 0.49, 0.01],  # tiny margin
        [0.40, 0.30, 0.30],  # spread out: highest entropy
        [0.60, 0.20, 0.20],
    ]
)


def test_uncertainty_strategies_rank_and_explain():
    by_margin = select(2, "margin", probs=PROBS)
    assert list(by_margin.indices) == [1, 2]
    assert "0.01 apart" in by_margin.choices[0].reason
    assert list(select(1, "entropy", probs=PROBS).indices) == [2]
    assert list(select(4, "least_confidence", probs=PROBS).indices) == [2, 1, 3, 0]
    assert [c.rank for c in by_margin.choices] == [1, 2]
    assert by_margin.choices[0].score > by_margin.choices[1].score


def test_labelled_rows_are_never_chosen_and_ids_come_back():
    chosen = select(
        3, "entropy", probs=PROBS, labeled=[2], ids=["a", "b", "c", "d"], class_names="xyz"
    )
    assert "c" not in [c.id for c in chosen.choices]
    assert [c.id for c in chosen.choices] == ["d", "b", "a"]  # entropy 0.95, 0.74, 0.11
    reason = select(1, "margin", probs=PROBS, class_names="xyz").choices[0].reason
    assert "classes x (0.50) and y (0.49)" in reason


def test_bald_strategy_from_samples():
    samples = np.tile(PROBS[None], (10, 1, 1))
    flip = samples.copy()
    flip[::2, 3] = [[0.0, 1.0, 0.0]]  # row 3: the samples disagree
    flip[1::2, 3] = [[1.0, 0.0, 0.0]]
    chosen = select(1, "bald", samples=flip)
    assert list(chosen.indices) == [3]
    assert "samples disagree" in chosen.choices[0].reason


def test_k_center_covers_the_clusters():
    rng = np.random.default_rng(1)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)
    points = np.concatenate([c + rng.normal(0, 0.1, (25, 2)) for c in centres])
    chosen, gaps = k_center_greedy(points, 4)
    assert sorted(set(chosen // 25)) == [0, 1, 2, 3]  # one row from every cluster
    assert np.all(np.diff(gaps[1:]) <= 1e-9)  # each new centre is no farther than the last
    # Labelled rows count as centres: with cluster 0 labelled the first pick leaves it.
    chosen, _ = k_center_greedy(points, 3, labeled=np.arange(25))
    assert 0 not in set(chosen // 25)
    sel = select(3, "coreset", embeddings=points, labeled=np.arange(25))
    assert "farthest" in sel.choices[0].reason


def test_random_strategy_is_seeded_and_selection_errors_are_clear():
    a = select(2, "random", probs=PROBS, seed=3).indices
    b = select(2, "random", probs=PROBS, seed=3).indices
    np.testing.assert_array_equal(a, b)
    with pytest.raises(LabelDataError, match="unknown strategy"):
        select(1, "best", probs=PROBS)
    with pytest.raises(LabelDataError, match="needs embeddings"):
        select(1, "coreset", probs=PROBS)
    with pytest.raises(LabelDataError, match="already labelled"):
        select(1, "margin", probs=PROBS, labeled=[0, 1, 2, 3])
    with pytest.raises(LabelDataError, match="sums to"):
        select(1, "margin", probs=PROBS * 0.5)


# ---------------------------------------------------------------- confident learning


def _noisy_problem(seed: int, n: int = 3000, k: int = 8, noise: float = 0.2):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), true] += rng.uniform(0.5, 5, n)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    noisy = true.copy()
    flip = rng.permutation(n)[: int(noise * n)]
    noisy[flip] = (true[flip] + rng.integers(1, k, len(flip))) % k
    return true, noisy, probs


def test_confident_joint_matches_cleanlab():
    count = pytest.importorskip("cleanlab.count", reason="cleanlab is the reference here")
    _, noisy, probs = _noisy_problem(0)
    mine = confident_joint(noisy, probs)
    theirs = count.compute_confident_joint(noisy, probs, calibrate=True)
    np.testing.assert_array_equal(mine, theirs)
    assert mine.sum() == len(noisy)
    np.testing.assert_array_equal(mine.sum(axis=1), np.bincount(noisy, minlength=8))


def test_label_issues_agree_with_cleanlab_and_find_the_noise():
    cleanlab_filter = pytest.importorskip("cleanlab.filter", reason="cleanlab is the reference")
    true, noisy, probs = _noisy_problem(1)
    issues = find_label_issues(noisy, probs)
    theirs = cleanlab_filter.find_label_issues(noisy, probs, n_jobs=1)
    # Same algorithm, same rounding convention: the same rows.
    np.testing.assert_array_equal(issues.mask, theirs)
    wrong = noisy != true

    def f1(mask):
        precision = (mask & wrong).sum() / mask.sum()
        recall = (mask & wrong).sum() / wrong.sum()
        return 2 * precision * recall / (precision + recall), precision, recall

    mine, precision, recall = f1(issues.mask)
    assert precision > 0.6 and recall > 0.75  # far above chance (20% of rows are wrong)
    assert mine >= f1(theirs)[0] - 0.005
    assert 0.12 < issues.estimated_noise_rate < 0.28
    # Ranked worst first, by self-confidence of the given label.
    q = issues.quality[issues.ranked]
    assert np.all(np.diff(q) >= 0)
    assert set(issues.ranked) == set(np.flatnonzero(issues.mask))
    # Suggested labels of flagged rows are mostly the true ones.
    assert (issues.suggested[wrong & issues.mask] == true[wrong & issues.mask]).mean() > 0.8


def test_quality_scores_match_cleanlab():
    rank = pytest.importorskip("cleanlab.rank", reason="cleanlab is the reference here")
    _, noisy, probs = _noisy_problem(2, n=500)
    for method in ("self_confidence", "normalized_margin"):
        np.testing.assert_allclose(
            label_quality_scores(noisy, probs, method),
            rank.get_label_quality_scores(noisy, probs, method=method),
            rtol=1e-9,
            atol=1e-12,
        )
    cwe = label_quality_scores(noisy, probs, "confidence_weighted_entropy")
    assert np.all((cwe > 0) & (cwe <= 1))


def test_other_filters_are_consistent():
    _, noisy, probs = _noisy_problem(3, n=1000)
    by_noise = find_label_issues(noisy, probs).mask
    by_class = find_label_issues(noisy, probs, method="prune_by_class").mask
    both = find_label_issues(noisy, probs, method="both").mask
    np.testing.assert_array_equal(both, by_noise & by_class)
    argmax = find_label_issues(noisy, probs, method="argmax").mask
    assert not (by_noise & ~argmax).any()  # a flagged row is never predicted as its label


def test_clean_labels_give_few_issues():
    true, _, probs = _noisy_problem(4, n=2000, noise=0.0)
    assert find_label_issues(true, probs).num_issues < 0.03 * len(true)


def test_label_errors_bad_input():
    probs = np.full((4, 3), 1 / 3)
    with pytest.raises(LabelDataError, match="label 3 is outside the class set 0..2"):
        find_label_issues(np.array([0, 1, 2, 3]), probs)
    with pytest.raises(LabelDataError, match="3 labels for 4 rows"):
        find_label_issues(np.array([0, 1, 2]), probs)
    with pytest.raises(LabelDataError, match="no rows"):
        find_label_issues(np.array([], dtype=int), np.zeros((0, 3)))


# ---------------------------------------------------------------- crowd


def _simulate(seed: int, items: int, classes: int, accuracies, per_item: int, systematic: bool):
    """Records from annotators of known accuracy; wrong answers uniform over the other classes
    or (systematic) from each annotator's own confusion distribution."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, items)
    accuracies = np.asarray(accuracies)
    confusions = rng.dirichlet(np.full(classes - 1, 0.3), size=(len(accuracies), classes))
    records = []
    for i in range(items):
        for a in rng.choice(len(accuracies), per_item, replace=False):
            t = truth[i]
            if rng.random() < accuracies[a]:
                label = t
            elif systematic:
                label = (t + 1 + rng.choice(classes - 1, p=confusions[a, t])) % classes
            else:
                label = (t + rng.integers(1, classes)) % classes
            records.append((f"item{i}", f"ann{a}", int(label)))
    return truth, records


def _accuracy(result, truth) -> float:
    order = [int(name[4:]) for name in result.crowd.item_names]
    return float((result.labels == truth[order]).mean())


def test_dawid_skene_and_mace_beat_majority_vote_and_estimate_skills():
    acc = np.linspace(0.3, 0.9, 12)
    truth, records = _simulate(0, 600, 4, acc, 5, systematic=True)
    crowd = CrowdLabels.from_records(records, num_classes=4)
    mv, ds, ma = majority_vote(crowd), dawid_skene(crowd), mace(crowd)
    assert _accuracy(ds, truth) >= _accuracy(mv, truth) + 0.03
    assert _accuracy(ma, truth) > _accuracy(mv, truth)
    assert ds.converged and ds.iterations > 1
    order = [int(name[3:]) for name in crowd.annotator_names]
    # Estimated skills follow the annotators' true accuracies.
    assert np.corrcoef(ds.skills, acc[order])[0, 1] > 0.9
    assert np.corrcoef(ma.skills, acc[order])[0, 1] > 0.9
    np.testing.assert_allclose(ds.posteriors.sum(axis=1), 1.0)
    assert ds.confusions.shape == (12, 4, 4)


def test_majority_vote_counts_votes():
    records = [("a", "x", "cat"), ("a", "y", "cat"), ("a", "z", "dog"), ("b", "x", "dog")]
    result = majority_vote(CrowdLabels.from_records(records))
    assert result.label_names() == ["cat", "dog"]
    np.testing.assert_allclose(result.confidences, [2 / 3, 1.0])
    np.testing.assert_allclose(result.skills, [1.0, 1.0, 0.0])  # x, y, z agree with the result


def test_a_good_model_as_annotator_helps():
    acc = np.full(6, 0.45)
    truth, records = _simulate(1, 400, 5, acc, 3, systematic=False)
    crowd = CrowdLabels.from_records(records, num_classes=5)
    rng = np.random.default_rng(2)
    items = [f"item{i}" for i in range(400)]
    model_labels = np.where(rng.random(400) < 0.85, truth, (truth + 1) % 5)
    with_model = crowd.with_annotator("model", items, model_labels)
    assert with_model.num_annotators == 7
    before, after = dawid_skene(crowd), dawid_skene(with_model)
    assert _accuracy(after, truth) > _accuracy(before, truth) + 0.05
    assert after.skills[-1] == after.skills.max()  # the model is the most skilled annotator


def test_crowd_records_bad_input(tmp_path):
    with pytest.raises(LabelDataError, match="no crowd records"):
        CrowdLabels.from_records([])
    with pytest.raises(LabelDataError, match="'bird' is not in the class set"):
        CrowdLabels.from_records([("a", "x", "bird")], class_names=["cat", "dog"])
    path = tmp_path / "r.csv"
    path.write_text("task,who,label\n1,a,0\n")
    with pytest.raises(LabelDataError, match="missing annotator column"):
        CrowdLabels.read_csv(path)
    crowd = CrowdLabels.read_csv(path, annotator_column="who")
    assert crowd.num_items == 1
    path.write_text("item,annotator,label\n")
    with pytest.raises(LabelDataError, match="no records"):
        CrowdLabels.read_csv(path)
    with pytest.raises(LabelDataError, match="outside the class set"):
        crowd.with_annotator("model", ["1"], np.array([3]))
