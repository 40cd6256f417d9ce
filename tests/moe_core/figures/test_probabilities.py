"""router_probabilities: the probe heatmap, its chosen and dropped marks, its hover."""

from __future__ import annotations

import numpy as np
import pytest
from figtools import all_text, arr, assert_valid, crafted_snapshot, one

from moe_core.figures.probabilities import probe_order, router_probabilities


def _marked(fig, name):
    t = one(fig, "scatter", name)
    return set(zip(arr(t.y).tolist(), arr(t.x).tolist(), strict=True))  # (row, expert)


def _expected(snap, chosen):
    view = snap.layers[0]
    rank = np.argsort(probe_order(snap))  # row of each probe
    kept, dropped = set(), set()
    for t, slot in zip(*np.nonzero(chosen), strict=True):
        cell = (int(rank[t]), int(view.probe_expert_index[t, slot]))
        (dropped if view.probe_dropped[t, slot] else kept).add(cell)
    return kept, dropped


@pytest.mark.parametrize("E, k, capacity", [(1, 1, None), (2, 1, 5), (4, 2, 5), (16, 3, None)])
def test_marks_exactly_the_chosen_cells(E, k, capacity):
    snap = crafted_snapshot(E=E, k=k, capacity=capacity)
    fig = router_probabilities(snap)
    view = snap.layers[0]
    kept, dropped = _expected(snap, np.ones(view.probe_expert_index.shape, dtype=bool))
    assert _marked(fig, "chosen expert") == kept
    assert _marked(fig, "chosen but dropped (buffer full)") == dropped
    assert len(kept) + len(dropped) == view.probe_expert_index.size
    if capacity is not None and E > 1:
        assert len(dropped) == 2  # the crafted view drops two slots
    assert_valid(fig)


def test_heatmap_is_the_probabilities_in_row_order_on_a_0_1_scale():
    snap = crafted_snapshot(E=4)
    heat = one(router_probabilities(snap), "heatmap")
    np.testing.assert_allclose(arr(heat.z), snap.layers[0].probe_probs[probe_order(snap)])
    assert heat.zmin == 0 and heat.zmax == 1 and not isinstance(heat.colorscale, str)


def test_rows_are_grouped_and_labelled_by_class():
    snap = crafted_snapshot(E=4)
    fig = router_probabilities(snap)
    groups = snap.probe_group[probe_order(snap)]
    assert (np.diff(groups) >= 0).all()
    assert list(fig.layout.yaxis.ticktext) == [snap.group_names[g] for g in sorted(set(groups.tolist()))]
    assert fig.layout.yaxis.autorange == "reversed"


def test_hover_has_token_index_group_and_probability():
    snap = crafted_snapshot(E=4)
    heat = one(router_probabilities(snap), "heatmap")
    text = arr(heat.text)
    t0 = int(probe_order(snap)[0])
    assert text[0, 0] == f"point {t0} ({snap.group_names[snap.probe_group[t0]]})"
    assert "p = %{z" in heat.hovertemplate


def test_expert_choice_marks_only_selected_experts():
    snap = crafted_snapshot(E=4, k=2, router="expert_choice", capacity=None)
    view = snap.layers[0]
    chosen = view.probe_combine > 0
    kept, _ = _expected(snap, chosen)
    fig = router_probabilities(snap)
    assert _marked(fig, "chosen expert") == kept and len(kept) < view.probe_expert_index.size
    assert "expert choice" in all_text(fig)


def test_dense_router_marks_nothing_and_says_why():
    fig = router_probabilities(crafted_snapshot(E=4, router="dense", capacity=None))
    assert [t.type for t in fig.data] == ["heatmap"]
    assert "every expert processes every token" in all_text(fig)


def test_language_probe_without_groups():
    snap = crafted_snapshot(task="language", G=4)
    fig = router_probabilities(snap)
    assert arr(one(fig, "heatmap").text)[0, 0] == "token 0"
    assert_valid(fig)


def test_many_rows_and_experts_keep_labels_apart():
    snap = crafted_snapshot(E=64, k=2, P=48)
    snap.probe_group = None
    fig = router_probabilities(snap)
    assert len(fig.layout.xaxis.tickvals) <= 16 and len(fig.layout.yaxis.tickvals) <= 16
