"""Dawid-Skene's Bayesian (MAP) variant: a Dirichlet prior on each confusion row centred on
the annotator's one-coin row, its strength fitted by empirical Bayes; checked against the
maximum-likelihood original, the one-coin limit and simulated crowds of known accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer.label import CrowdLabels, LabelDataError, aggregate, dawid_skene, majority_vote
from optimizer.label.crowd import _evidence_strength, _one_coin, _weighted_vote


def _crowd(seed: int, errors: str, *, items=1500, classes=10, annotators=20, per_item=3,
           accuracy=(0.2, 0.7)):  # fmt: skip
    """A simulated crowd: annotators of accuracy uniform in ``accuracy``; a wrong answer is a
    uniformly drawn other class or (systematic) follows the annotator's own confusion
    pattern (Dirichlet(0.3) over the other classes per true class). Returns the crowd, the
    true labels in the crowd's item order, and the true accuracies in its annotator order."""
    rng = np.random.default_rng(seed)
    acc = rng.uniform(*accuracy, annotators)
    pattern = rng.dirichlet(np.full(classes - 1, 0.3), size=(annotators, classes))
    truth = rng.integers(0, classes, items)
    records = []
    for i in range(items):
        t = truth[i]
        for a in rng.choice(annotators, per_item, replace=False):
            if rng.random() < acc[a]:
                label = t
            elif errors == "systematic":
                label = (t + 1 + rng.choice(classes - 1, p=pattern[a, t])) % classes
            else:
                label = (t + rng.integers(1, classes)) % classes
            records.append((i, a, int(label)))
    crowd = CrowdLabels.from_records(records, num_classes=classes)
    return crowd, truth[list(crowd.item_names)], acc[list(crowd.annotator_names)]


def _accuracy(result, truth) -> float:
    return float((result.labels == truth).mean())


def _ml_dawid_skene(crowd: CrowdLabels, smoothing=0.01, max_iter=500, tol=1e-6):
    """The maximum-likelihood Dawid-Skene as first written here (before the prior): EM from
    the majority vote's vote shares, ``smoothing`` pseudo-counts in every cell."""
    votes = np.zeros((crowd.num_items, crowd.num_classes))
    np.add.at(votes, (crowd.items, crowd.labels), 1.0)
    posts = votes / votes.sum(axis=1, keepdims=True)
    for it in range(1, max_iter + 1):
        prior = posts.sum(axis=0) + smoothing
        prior /= prior.sum()
        conf = np.full((crowd.num_annotators, crowd.num_classes, crowd.num_classes), smoothing)
        np.add.at(conf, (crowd.annotators, slice(None), crowd.labels), posts[crowd.items])
        conf /= conf.sum(axis=2, keepdims=True)
        logp = np.tile(np.log(prior), (crowd.num_items, 1))
        np.add.at(logp, crowd.items, np.log(conf[crowd.annotators, :, crowd.labels]))
        new = np.exp(logp - logp.max(axis=1, keepdims=True))
        new /= new.sum(axis=1, keepdims=True)
        delta = np.abs(new - posts).max()
        posts = new
        if it > 1 and delta < tol:
            break
    return posts, conf


@pytest.fixture(scope="module")
def uniform_crowd():
    return _crowd(0, "uniform")


@pytest.fixture(scope="module")
def systematic_crowd():
    return _crowd(0, "systematic")


def test_prior_strength_zero_is_the_maximum_likelihood_dawid_skene(systematic_crowd):
    crowd = systematic_crowd[0]
    posts, conf = _ml_dawid_skene(crowd)
    result = dawid_skene(crowd, prior_strength=0, init="majority")
    np.testing.assert_allclose(result.posteriors, posts, atol=1e-9)
    np.testing.assert_allclose(result.confusions, conf, atol=1e-9)
    assert result.extra["prior_strength"] == 0 and not result.extra["prior_strength_estimated"]


def test_a_strong_prior_tends_to_one_coin(uniform_crowd):
    crowd = uniform_crowd[0]
    one_coin = dawid_skene(crowd, model="one-coin")
    # One-coin: a single accuracy per annotator, errors spread evenly.
    off = one_coin.confusions[:, ~np.eye(crowd.num_classes, dtype=bool)]
    np.testing.assert_allclose(off, off[:, :1] * np.ones_like(off))
    gaps = []
    for strength in (1, 10, 100, 1e3, 1e7):
        result = dawid_skene(crowd, prior_strength=strength)
        gaps.append(np.abs(result.confusions - one_coin.confusions).max())
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 1e-4
    strong = dawid_skene(crowd, prior_strength=1e7)
    assert (strong.labels == one_coin.labels).mean() > 0.999


def test_default_beats_majority_vote_with_uniform_errors(uniform_crowd):
    crowd, truth, acc = uniform_crowd
    mv, default = majority_vote(crowd), dawid_skene(crowd)
    ml = dawid_skene(crowd, prior_strength=0, init="majority")
    assert _accuracy(default, truth) >= _accuracy(mv, truth) + 0.03
    # The unregularised model overfits its 90 confusion cells per annotator here.
    assert _accuracy(default, truth) >= _accuracy(ml, truth) + 0.03
    # Errors spread evenly: the fitted prior strength is large (the model is one-coin).
    assert default.extra["prior_strength"] > 1e3 and default.extra["prior_strength_estimated"]
    assert np.corrcoef(default.skills, acc)[0, 1] > 0.9


def test_default_keeps_the_full_model_with_systematic_errors(systematic_crowd):
    crowd, truth, acc = systematic_crowd
    mv, default = majority_vote(crowd), dawid_skene(crowd)
    ml = dawid_skene(crowd, prior_strength=0, init="majority")
    one_coin = dawid_skene(crowd, model="one-coin")
    assert _accuracy(default, truth) >= _accuracy(mv, truth) + 0.1
    assert _accuracy(default, truth) >= _accuracy(ml, truth) - 0.01
    assert _accuracy(default, truth) >= _accuracy(one_coin, truth) + 0.05
    assert default.extra["prior_strength"] < 30
    assert default.converged


def test_evidence_strength_recovers_the_dispersion_of_the_rows():
    rng = np.random.default_rng(3)
    accuracy = rng.uniform(0.3, 0.9, 40)
    coin = _one_coin(accuracy, 6)
    multinomial = np.array([[rng.multinomial(200, row) for row in a] for a in coin])
    assert _evidence_strength(multinomial.astype(float), coin) > 1e3
    dispersed = np.array([[rng.multinomial(200, rng.dirichlet(5.0 * row)) for row in a]
                          for a in coin])  # fmt: skip
    assert 2.5 < _evidence_strength(dispersed.astype(float), coin) < 10


def test_weighted_start_discounts_poor_annotators(uniform_crowd):
    crowd, truth, _ = uniform_crowd
    start = _weighted_vote(crowd, seed=0)
    np.testing.assert_allclose(start.sum(axis=1), 1.0)
    assert (start.argmax(axis=1) == truth).mean() > _accuracy(majority_vote(crowd), truth)
    for init in ("majority", "weighted"):
        assert _accuracy(dawid_skene(crowd, init=init), truth) > 0.6


def test_options_through_aggregate_and_the_model_as_annotator(uniform_crowd):
    crowd, truth, _ = uniform_crowd
    result = aggregate(crowd, "dawid_skene", model="one-coin")
    assert result.extra["model"] == "one-coin"
    model_labels = np.where(np.random.default_rng(1).random(len(truth)) < 0.95, truth,
                            (truth + 1) % crowd.num_classes)  # fmt: skip
    with_model = crowd.with_annotator("model", list(crowd.item_names), model_labels)
    alone = _accuracy(aggregate(crowd, "dawid_skene"), truth)
    for kwargs in ({}, {"model": "one-coin"}, {"prior_strength": 0}):
        out = aggregate(with_model, "dawid_skene", **kwargs)
        assert out.skills[-1] == out.skills.max()  # the model is the most skilled annotator
        assert _accuracy(out, truth) > alone + 0.2
    # The default weighs the crowd with the model: better than either alone.
    combined = _accuracy(aggregate(with_model, "dawid_skene"), truth)
    assert combined > (model_labels == truth).mean() > alone


def test_bad_options_and_a_single_class():
    crowd = CrowdLabels.from_records([("a", "x", "cat"), ("a", "y", "cat"), ("b", "x", "cat")])
    assert crowd.num_classes == 1
    for kwargs in ({}, {"model": "one-coin"}, {"prior_strength": 0}):
        result = dawid_skene(crowd, **kwargs)
        assert result.label_names() == ["cat", "cat"]
        np.testing.assert_allclose(result.posteriors, 1.0)
    bad = [
        ({"model": "two-coin"}, "unknown Dawid-Skene model"),
        ({"init": "random"}, "unknown initialisation"),
        ({"prior_strength": -1.0}, "prior_strength must be"),
        ({"prior_strength": float("nan")}, "prior_strength must be"),
        ({"prior_strength": "large"}, "prior_strength must be"),
    ]
    for kwargs, message in bad:
        with pytest.raises(LabelDataError, match=message):
            dawid_skene(crowd, **kwargs)
