"""expert_load: kept vs dropped bars, the capacity line and the fair share."""

from __future__ import annotations

import numpy as np
import pytest
from figtools import arr, assert_valid, crafted_snapshot, one

from moe_core.figures.load import expert_load
from moe_core.figures.palette import expert_colors


def _lines(fig):
    return {t.name.split(" = ")[0]: t for t in fig.data if t.type == "scatter"}


@pytest.mark.parametrize("E, k", [(1, 1), (2, 1), (4, 2), (64, 8)])
def test_bars_are_kept_and_dropped_exactly(E, k):
    snap = crafted_snapshot(E=E, k=k)
    view = snap.layers[0]
    fig = expert_load(snap)
    kept = one(fig, "bar", "kept (colour = expert)")
    dropped = one(fig, "bar", "dropped (over capacity)")
    np.testing.assert_array_equal(arr(kept.y), view.kept_per_expert)
    np.testing.assert_array_equal(arr(dropped.y), view.tokens_per_expert - view.kept_per_expert)
    np.testing.assert_array_equal(arr(kept.y) + arr(dropped.y), view.tokens_per_expert)
    assert list(kept.marker.color) == expert_colors(E)
    assert fig.layout.barmode == "stack"
    assert len(fig.layout.xaxis.tickvals) <= 16
    assert_valid(fig)


def test_capacity_line_sits_at_c_and_fair_share_at_kt_over_e():
    snap = crafted_snapshot(E=4, k=2, capacity=5)
    fig = expert_load(snap)
    lines = _lines(fig)
    cap = lines["capacity C"]
    assert list(cap.y) == [5, 5] and cap.name == "capacity C = 5"
    assert list(cap.x) == [-0.5, 3.5]
    fair = lines["fair share k·T/E"] if "fair share k·T/E" in lines else lines["fair share (slots / E)"]
    total = snap.layers[0].tokens_per_expert.sum()
    assert list(fair.y) == pytest.approx([total / 4] * 2) and fair.line.dash == "dash"
    assert any("capacity C = 5" in a.text for a in fig.layout.annotations)


def test_fair_share_named_k_t_over_e_when_slots_are_k_t():
    snap = crafted_snapshot(E=4, k=2)
    view = snap.layers[0]
    view.tokens_per_expert = np.array([12, 10, 8, 10])
    view.kept_per_expert = np.minimum(view.tokens_per_expert, 5)
    snap.batch_tokens = 20  # k·T = 40 slots
    fair = _lines(expert_load(snap))["fair share k·T/E"]
    assert fair.name == "fair share k·T/E = 10" and list(fair.y) == [10, 10]


def test_title_counts_dropped_tokens():
    snap = crafted_snapshot(E=4, k=2, capacity=5)
    n = int((snap.layers[0].tokens_per_expert - snap.layers[0].kept_per_expert).sum())
    assert n > 0 and f"{n} dropped" in expert_load(snap).layout.title.text


def test_dropless_has_no_capacity_line_and_no_drops():
    snap = crafted_snapshot(E=3, k=1, capacity=None)
    fig = expert_load(snap)
    assert "capacity C" not in _lines(fig)
    assert (arr(one(fig, "bar", "dropped (over capacity)").y) == 0).all()
    assert "dropless" in fig.layout.title.text
    assert_valid(fig)


def test_hover_names_routed_kept_dropped():
    fig = expert_load(crafted_snapshot())
    kept = one(fig, "bar", "kept (colour = expert)")
    assert "routed" in kept.hovertemplate and "dropped" in kept.hovertemplate
    assert arr(kept.customdata).shape == (4, 3)


@pytest.mark.parametrize("tokens, apart", [([8, 5, 4, 3], False),  # fair share 5 = C
                                           ([8, 5, 4, 4], False),  # 5.25, close to C = 5
                                           ([30, 5, 4, 1], True)])  # 10, far above C
def test_capacity_and_fair_share_labels_never_share_a_height(tokens, apart):
    # "capacity C = 32" and "fair share = 32" were drawn side by side on one line and ran into each other
    snap = crafted_snapshot(E=4, k=2, capacity=5)
    view = snap.layers[0]
    view.tokens_per_expert = np.array(tokens)
    view.kept_per_expert = np.minimum(view.tokens_per_expert, 5)
    cap, fair = expert_load(snap).layout.annotations
    assert cap.text == "capacity C = 5" and fair.text.startswith("fair share = ")
    assert (cap.y, cap.yanchor) != (fair.y, fair.yanchor)
    if apart:  # both sit on their lines
        assert cap.yanchor == fair.yanchor == "bottom"
    else:  # the higher line's label above it, the lower one's below
        assert {cap.yanchor, fair.yanchor} == {"bottom", "top"}
        assert (cap.yanchor == "bottom") == (cap.y >= fair.y)
