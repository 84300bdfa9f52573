"""Recommendations explained by past items: the synthetic log's planted drivers are found."""

from __future__ import annotations

import numpy as np
import pytest

from optimizer.explain import GradientModel, recsys
from optimizer.explain.errors import ExplainError


def test_interaction_log_plants_a_driver_for_every_next_item():
    log = recsys.interaction_log(users=200, seed=1)
    assert log.history.shape == (200, 200) and set(np.unique(log.history)) == {0.0, 1.0}
    for u in range(200):
        assert log.history[u, log.next_item[u]] == 0  # the next item is new to the user
        assert len(log.drivers(u, int(log.next_item[u]))) >= 2
    events = log.events()
    assert events[-1] == (199, int(log.next_item[199]))
    assert len(events) == int(log.history.sum()) + 200


@pytest.fixture(scope="module")
def recommender(tmp_path_factory):
    pytest.importorskip("torch", reason="training the two-tower model needs the torch extra")
    log = recsys.interaction_log(users=3000, seed=0)
    path = tmp_path_factory.mktemp("recsys") / "two_tower.onnx"
    info = recsys.train_two_tower(log, path, seed=0)
    return log, GradientModel(path), info


@pytest.mark.torch
@pytest.mark.parametrize("method", ["integrated_gradients", "input_x_gradient", "occlusion"])
def test_explanations_recover_the_planted_drivers(recommender, method, record_property):
    log, model, info = recommender
    assert info["hit_rate_at_10"] > 0.8
    result = recsys.evaluate(model, log, np.arange(150), method=method)
    record_property(method, result.to_json())
    print(method, result.to_json())
    assert result.users >= 100
    assert result.precision >= result.random_precision + 0.25
    assert result.score_drop > 3 * result.random_score_drop


@pytest.mark.torch
def test_occlusion_contributions_are_leave_one_out_score_drops(recommender):
    log, model, _ = recommender
    history = log.history[7]
    item = int(recsys.recommend(model.predict(history[None])[0], history, 1)[0])
    exp = recsys.explain_recommendation(model, history, item, method="occlusion")
    base = model.predict(history[None])[0, item]
    for past, contribution in zip(exp.past_items[:3], exp.contributions[:3]):
        without = history.copy()
        without[past] = 0
        drop = base - model.predict(without[None])[0, item]
        assert contribution == pytest.approx(drop, rel=1e-4, abs=1e-4)
    assert list(exp.contributions) == sorted(exp.contributions, reverse=True)


@pytest.mark.torch
def test_integrated_gradients_split_the_score_among_past_items(recommender):
    log, model, _ = recommender
    history = log.history[3]
    exp = recsys.explain_recommendation(model, history, 11, steps=64)
    empty = model.predict(np.zeros_like(history)[None])[0, 11]
    assert exp.contributions.sum() == pytest.approx(exp.score - empty, rel=0.01, abs=1e-3)
    with pytest.raises(ExplainError, match="history is empty"):
        recsys.explain_recommendation(model, np.zeros_like(history), 11)
