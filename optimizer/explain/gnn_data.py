"""Synthetic node-classification graphs with ground-truth motifs (Ying et al., NeurIPS 2019).

- :func:`ba_shapes`: a Barabasi-Albert graph (300 nodes, 5 edges per new node) with 80 five-node
  "house" motifs attached to random base nodes; classes: base 0, house top 1, middle 2, roof 3.
- :func:`tree_cycles`: a balanced binary tree of depth 8 (511 nodes) with 80 six-node cycles
  attached; classes: tree 0, cycle 1.

Both add ``noise`` x (number of edges) random edges (GNNExplainer's ``perturb``, 1%), have
constant 10-dim node features (so only structure can tell the classes apart) and record for
each node the motif it belongs to (-1: base graph). An edge is a ground-truth explanation edge
when both ends lie in the same motif. Generated with numpy from a seed; no download, no
networkx or torch_geometric.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

FEATURES = 10


@dataclass(frozen=True)
class SyntheticGraph:
    """An undirected graph with features, labels and motif membership."""

    name: str
    edges: np.ndarray  # [E, 2] with i < j, unique
    features: np.ndarray  # [N, F] float32
    labels: np.ndarray  # [N] int64
    motif: np.ndarray  # [N] motif id, -1 for the base graph

    @property
    def num_nodes(self) -> int:
        """Number of nodes."""
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of node classes."""
        return int(self.labels.max()) + 1

    @cached_property
    def adjacency(self) -> np.ndarray:
        """The symmetric 0/1 adjacency matrix ``[N, N]`` (no self loops)."""
        a = np.zeros((self.num_nodes, self.num_nodes), dtype=np.float32)
        a[self.edges[:, 0], self.edges[:, 1]] = 1
        a[self.edges[:, 1], self.edges[:, 0]] = 1
        return a

    @cached_property
    def normalized_adjacency(self) -> np.ndarray:
        """GCN's ``D^-1/2 (A + I) D^-1/2`` (Kipf & Welling, 2017), float32."""
        a = self.adjacency + np.eye(self.num_nodes, dtype=np.float32)
        d = 1.0 / np.sqrt(a.sum(axis=1))
        return (a * d[:, None] * d[None, :]).astype(np.float32)

    def in_motif(self, edges: np.ndarray) -> np.ndarray:
        """Whether each edge ``[E, 2]`` joins two nodes of the same motif (ground truth)."""
        a, b = self.motif[edges[:, 0]], self.motif[edges[:, 1]]
        return (a == b) & (a >= 0)

    def motif_nodes(self) -> np.ndarray:
        """Every node of every motif."""
        return np.flatnonzero(self.motif >= 0)

    def anchor_nodes(self) -> np.ndarray:
        """The first node of each motif, the one attached to the base graph: the nodes the
        GNNExplainer paper's evaluation explains (one per motif)."""
        nodes = self.motif_nodes()
        first = np.r_[True, self.motif[nodes][1:] != self.motif[nodes][:-1]]
        return nodes[first]

    def neighbourhood(self, node: int, hops: int) -> np.ndarray:
        """Nodes within ``hops`` of ``node`` (sorted), the computation graph of a
        ``hops``-layer GCN."""
        reached = np.zeros(self.num_nodes, dtype=bool)
        reached[node] = True
        frontier = reached.copy()
        a = self.adjacency > 0
        for _ in range(hops):
            frontier = a[frontier].any(axis=0) & ~reached
            reached |= frontier
        return np.flatnonzero(reached)


def _barabasi_albert(n: int, m: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Preferential attachment: each new node links to ``m`` distinct earlier nodes drawn
    with probability proportional to their degree (networkx's construction, star start)."""
    edges = [(0, k) for k in range(1, m + 1)]
    repeated = [0] * m + list(range(1, m + 1))
    for new in range(m + 1, n):
        targets: set[int] = set()
        while len(targets) < m:
            targets.add(repeated[rng.integers(len(repeated))])
        for t in targets:
            edges.append((t, new))
            repeated.extend((t, new))
    return edges


def _balanced_tree(depth: int) -> list[tuple[int, int]]:
    return [((k - 1) // 2, k) for k in range(1, 2 ** (depth + 1) - 1)]


# Motifs as local edge lists. House: square 0-1-2-3 with the roof 4 on top of 0 and 1.
HOUSE_EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 0), (4, 1)]
CYCLE_EDGES = [(k, (k + 1) % 6) for k in range(6)]


def _attach(
    name: str,
    base_edges: list[tuple[int, int]],
    base_nodes: int,
    motif_edges: list[tuple[int, int]],
    motif_labels: list[int],
    count: int,
    noise: float,
    rng: np.random.Generator,
) -> SyntheticGraph:
    edges = list(base_edges)
    labels = [0] * base_nodes
    motif = [-1] * base_nodes
    size = len(motif_labels)
    anchors = rng.choice(base_nodes, size=count, replace=False)
    for k, anchor in enumerate(anchors):
        start = base_nodes + k * size
        edges.extend((start + a, start + b) for a, b in motif_edges)
        edges.append((int(anchor), start))  # the motif hangs off the base graph by one edge
        labels.extend(motif_labels)
        motif.extend([k] * size)
    n = len(labels)
    present = {(min(a, b), max(a, b)) for a, b in edges}
    for _ in range(int(noise * len(present))):
        while True:
            a, b = (int(v) for v in rng.choice(n, size=2, replace=False))
            key = (min(a, b), max(a, b))
            if key not in present:
                present.add(key)
                break
    return SyntheticGraph(
        name,
        np.array(sorted(present), dtype=np.int64),
        np.ones((n, FEATURES), dtype=np.float32),
        np.array(labels, dtype=np.int64),
        np.array(motif, dtype=np.int64),
    )


def ba_shapes(
    base: int = 300, houses: int = 80, m: int = 5, noise: float = 0.01, seed: int = 0
) -> SyntheticGraph:
    """BA-Shapes: 300 + 5 x 80 = 700 nodes, 4 classes (see the module docstring)."""
    rng = np.random.default_rng(seed)
    # House: square 0-1-2-3 with roof 4 on top of 0 and 1. Classes: 1 = the two square nodes
    # under the roof, 2 = the two bottom nodes, 3 = the roof.
    labels = [1, 1, 2, 2, 3]
    return _attach(
        "ba_shapes", _barabasi_albert(base, m, rng), base, HOUSE_EDGES, labels, houses, noise, rng
    )


def tree_cycles(
    depth: int = 8, cycles: int = 80, noise: float = 0.01, seed: int = 0
) -> SyntheticGraph:
    """Tree-Cycles: 511 + 6 x 80 = 991 nodes, 2 classes (see the module docstring)."""
    rng = np.random.default_rng(seed)
    base = 2 ** (depth + 1) - 1
    return _attach(
        "tree_cycles", _balanced_tree(depth), base, CYCLE_EDGES, [1] * 6, cycles, noise, rng
    )


DATASETS = {"ba_shapes": ba_shapes, "tree_cycles": tree_cycles}
