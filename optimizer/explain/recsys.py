"""Explaining recommendations by the user's past items that drive them.

- :func:`interaction_log`: a synthetic log with a planted cause. Items come in *bundles*
  (series, sets: items consumed together). Each user follows a few bundles and has consumed
  part of each, plus a few random items; the next item is a missing item of one of the user's
  bundles. For a recommended item, its *drivers* are the user's past items of its bundle: the
  ground truth an explanation should recover.
- :func:`train_two_tower`: a two-tower model in plain torch: the user tower embeds the history
  (a multi-hot vector, mean of item embeddings, then an MLP), the item tower is an embedding
  table, the score is their dot product. Exported to ONNX with the history as a float input
  (``history: [N, I]`` -> ``scores: [N, I]``). Torch is imported only there.
- :func:`explain_recommendation`: attributions of a recommended item's score to the history
  entries, on the ONNX model with the IR's gradients (integrated gradients from the empty
  history, or gradient x input) or with leave-one-out masks applied inside the graph
  (occlusion).
- :func:`evaluate`: precision of the top-attributed past items against the drivers, beside a
  random ranking, and how much removing them lowers the recommended item's score.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimizer.explain.attribution import input_x_gradient, integrated_gradients
from optimizer.explain.errors import ExplainError
from optimizer.explain.gradients import GradientModel


@dataclass(frozen=True)
class InteractionLog:
    """Histories (multi-hot ``[U, I]``), next items ``[U]`` and the bundle of every item."""

    history: np.ndarray
    next_item: np.ndarray
    bundle: np.ndarray

    @property
    def num_items(self) -> int:
        """Number of items."""
        return self.history.shape[1]

    def drivers(self, user: int, item: int) -> np.ndarray:
        """The past items of ``user`` from ``item``'s bundle (the ground-truth explanation)."""
        past = np.flatnonzero(self.history[user] > 0)
        return past[self.bundle[past] == self.bundle[item]]

    def events(self) -> list[tuple[int, int]]:
        """The log as (user, item) events, the next item last for each user."""
        out = []
        for u in range(len(self.history)):
            out.extend((u, int(i)) for i in np.flatnonzero(self.history[u]))
            out.append((u, int(self.next_item[u])))
        return out


def interaction_log(
    users: int = 3000,
    bundles: int = 40,
    bundle_size: int = 5,
    followed: int = 3,
    noise_items: int = 3,
    seed: int = 0,
) -> InteractionLog:
    """Generate the log (see the module docstring); ``bundles * bundle_size`` items."""
    rng = np.random.default_rng(seed)
    items = bundles * bundle_size
    bundle = np.repeat(np.arange(bundles), bundle_size)
    history = np.zeros((users, items), dtype=np.float32)
    next_item = np.zeros(users, dtype=np.int64)
    for u in range(users):
        chosen = rng.choice(bundles, size=followed, replace=False)
        for b in chosen:
            members = np.flatnonzero(bundle == b)
            seen = rng.choice(members, size=rng.integers(2, bundle_size), replace=False)
            history[u, seen] = 1
        # The next item completes one of the followed bundles.
        b = chosen[0]
        missing = np.flatnonzero((bundle == b) & (history[u] == 0))
        next_item[u] = rng.choice(missing)
        # Random items from unfollowed bundles: consumed, but driving nothing.
        others = np.flatnonzero(~np.isin(bundle, chosen))
        history[u, rng.choice(others, size=noise_items, replace=False)] = 1
    return InteractionLog(history, next_item, bundle)


def train_two_tower(
    log: InteractionLog,
    path: str | os.PathLike,
    *,
    dim: int = 32,
    epochs: int = 30,
    lr: float = 0.01,
    batch: int = 128,
    seed: int = 0,
) -> dict:
    """Train the two-tower model on ``log`` (softmax over all items, the next item as the
    label), export it to ONNX at ``path`` and return ``{"hit_rate_at_10", "path"}`` (the next
    item among the 10 best-scored unseen items, on the training log). Needs torch."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    items = log.num_items

    class TwoTower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.history_embedding = nn.Parameter(torch.randn(items, dim) * 0.1)
            self.user_mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
            self.item_embedding = nn.Parameter(torch.randn(items, dim) * 0.1)

        def forward(self, history: torch.Tensor) -> torch.Tensor:
            count = history.sum(dim=-1, keepdim=True) + 1.0  # +1: the empty history is valid
            user = self.user_mlp(history @ self.history_embedding / count)
            return user @ self.item_embedding.T

    model = TwoTower()
    x = torch.from_numpy(log.history)
    y = torch.from_numpy(log.next_item)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for start in range(0, len(x), batch):
                idx = order[start : start + batch]
                opt.zero_grad()
                nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        scores = model(x).numpy()
    hits = np.mean(
        [log.next_item[u] in recommend(scores[u], log.history[u], 10) for u in range(len(x))]
    )
    _export(model, path, x[:2])
    return {"hit_rate_at_10": float(hits), "path": str(path)}


def _export(model, path, example) -> None:
    import warnings

    import torch

    batch = torch.export.Dim("batch", min=1, max=100_000)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["history"],
            output_names=["scores"],
            dynamic_shapes=({0: batch},),
            external_data=False,
            verbose=False,
        )
        program.save(str(path), external_data=False)


def recommend(scores: np.ndarray, history: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best-scored items the user has not consumed, best first."""
    masked = np.where(history > 0, -np.inf, scores)
    return np.argsort(-masked, kind="stable")[:k]


@dataclass
class RecommendationExplanation:
    """Why ``item`` was recommended: each past item with its contribution, largest first."""

    item: int
    score: float
    past_items: np.ndarray
    contributions: np.ndarray


def explain_recommendation(
    model: GradientModel,
    history: np.ndarray,
    item: int,
    *,
    method: str = "integrated_gradients",
    steps: int = 32,
) -> RecommendationExplanation:
    """Attribute the score of ``item`` for one user's ``history`` (a multi-hot ``[I]``) to
    the past items.

    ``method``: "integrated_gradients" (from the empty history; contributions sum to the
    score difference), "input_x_gradient", or "occlusion" (leave one past item out: the score
    drop, all past items in one masked run).
    """
    h = np.asarray(history, dtype=model.dtype)[None]
    past = np.flatnonzero(h[0] > 0)
    if len(past) == 0:
        raise ExplainError("the history is empty: nothing to explain the recommendation by")
    if method == "integrated_gradients":
        res = integrated_gradients(model, h, item, baseline=0.0, steps=steps)
        contrib, score = res.attributions[0, past], float(res.scores[0])  # type: ignore[index]
    elif method == "input_x_gradient":
        res = input_x_gradient(model, h, item)
        contrib, score = res.attributions[0, past], float(res.scores[0])  # type: ignore[index]
    elif method == "occlusion":
        masks = np.ones((len(past) + 1, h.shape[1]), dtype=model.dtype)
        masks[np.arange(1, len(past) + 1), past] = 0  # mask k+1 drops past item k
        out = model.run_masks(h, np.zeros_like(h), masks)[:, item].astype(np.float64)
        contrib, score = out[0] - out[1:], float(out[0])
    else:
        raise ExplainError(
            f"unknown method {method!r}: integrated_gradients, input_x_gradient, occlusion"
        )
    order = np.argsort(-contrib, kind="stable")
    return RecommendationExplanation(item, score, past[order], np.asarray(contrib)[order])


@dataclass
class RecsysEvaluation:
    """Precision@k of the top-attributed past items against the drivers (k = the number of
    drivers), a random ranking's, and the mean score drop from removing the top-k past items
    beside removing k random past items."""

    precision: float
    random_precision: float
    score_drop: float
    random_score_drop: float
    users: int

    def to_json(self) -> dict:
        """A JSON-ready dict."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in vars(self).items()}


def evaluate(
    model: GradientModel,
    log: InteractionLog,
    users: np.ndarray,
    *,
    method: str = "integrated_gradients",
    seed: int = 0,
) -> RecsysEvaluation:
    """Explain each user's top recommendation and score the explanations (see
    :class:`RecsysEvaluation`). Users whose top recommendation has no driver are skipped."""
    rng = np.random.default_rng(seed)
    scores = model.predict(log.history[users])
    precision, rand_precision, drop, rand_drop = [], [], [], []
    for row, u in enumerate(users):
        item = int(recommend(scores[row], log.history[u], 1)[0])
        drivers = log.drivers(int(u), item)
        if len(drivers) == 0:
            continue
        exp = explain_recommendation(model, log.history[u], item, method=method)
        k = len(drivers)
        precision.append(np.isin(exp.past_items[:k], drivers).mean())
        shuffled = rng.permutation(exp.past_items)
        rand_precision.append(np.isin(shuffled[:k], drivers).mean())
        cut = np.repeat(log.history[u][None], 2, axis=0)
        cut[0, exp.past_items[:k]] = 0
        cut[1, shuffled[:k]] = 0
        after = model.predict(cut)[:, item]
        drop.append(scores[row, item] - after[0])
        rand_drop.append(scores[row, item] - after[1])
    if not precision:
        raise ExplainError("no user's top recommendation has a driver in the history")
    return RecsysEvaluation(
        float(np.mean(precision)),
        float(np.mean(rand_precision)),
        float(np.mean(drop)),
        float(np.mean(rand_drop)),
        len(precision),
    )
