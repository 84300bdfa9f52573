"""Nodes with large weights are timed with their weights out of cache, as inside a model.

Alone, a node reads the same weights call after call from cache; inside a model larger than
the cache they come from memory. :func:`isolate.replicate` times copies with their own
weights in turn; the node's time is the copies' share.
"""

from __future__ import annotations

import numpy as np
import pytest
from cost_helpers import const, f32, op

from optimizer.cost import isolate
from optimizer.cost.device import DeviceSpec
from optimizer.ir import graph_input as ir_input
from optimizer.runtime import make_session

OPSETS = {"": 17}


def _conv(cin: int, cout: int, size: int, k: int):
    rng = np.random.default_rng(0)
    x = ir_input("x", f32(1, cin, size, size))
    w = const(rng.standard_normal((cout, cin, k, k)).astype(np.float32))
    b = const(rng.standard_normal(cout).astype(np.float32))
    return op("Conv", [x, w, b], f32(1, cout, size, size), kernel_shape=[k, k],
              pads=[k // 2] * 4)  # fmt: skip


def test_only_nodes_with_large_weights_get_copies():
    small = isolate.build(_conv(16, 16, 4, 3), OPSETS)  # 9 KiB of weights
    assert isolate.cold_copies(small) == 1
    large = isolate.build(_conv(240, 40, 2, 3), OPSETS)  # 338 KiB
    copies = isolate.cold_copies(large)
    assert 1 < copies <= isolate.COLD_MAX_COPIES
    assert copies * 240 * 40 * 9 * 4 >= isolate.COLD_BYTES
    huge = isolate.build(_conv(512, 512, 2, 3), OPSETS)  # 9 MiB: out of cache on its own
    assert isolate.cold_copies(huge) == 1


def test_copies_share_the_input_and_have_their_own_weights():
    built = isolate.build(_conv(240, 40, 2, 3), OPSETS)
    copied = isolate.replicate(built, 3)
    graph = copied.model.graph
    assert [n.op_type for n in graph.node] == ["Conv"] * 3
    assert {n.input[0] for n in graph.node} == {"in0"}  # one run-time input for all
    weights = {n.input[1] for n in graph.node}
    assert len(weights) == 3 and len(graph.output) == 3
    by_name = {t.name: t for t in graph.initializer}
    first, *others = (by_name[n.input[1]] for n in graph.node)
    original = isolate.numpy_helper.to_array(first)
    for other in others:
        array = isolate.numpy_helper.to_array(other)
        assert array.shape == original.shape and not np.array_equal(array, original)
        assert np.allclose(np.sort(array, axis=None), np.sort(original, axis=None))
    session = make_session(copied.model, device="cpu")
    outputs = session.run(None, copied.feeds)
    assert len(outputs) == 3 and all(o.shape == (1, 40, 2, 2) for o in outputs)
    assert isolate.replicate(built, 1) is built


def test_the_node_costs_its_share_of_the_copies(monkeypatch):
    built = isolate.build(_conv(240, 40, 2, 3), OPSETS)
    copies = isolate.cold_copies(built)
    timed = []

    def fake_raw(isolated, device, **kw):
        timed.append(len(isolated.model.graph.node))
        return 1e-6 + copies * 5e-6  # a run call's overhead, then 5 us a copy

    monkeypatch.setattr(isolate, "raw_seconds", fake_raw)
    monkeypatch.setattr(isolate, "run_overhead", lambda device: (1e-6, 1e-7))
    monkeypatch.setattr(isolate, "nchwc_core", lambda isolated, device: None)
    seconds, raw = isolate.time_model(built, DeviceSpec("cpu", threads=1))
    assert timed == [copies]
    assert seconds == pytest.approx(5e-6)
    assert raw == pytest.approx(1e-6 + copies * 5e-6)
