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
    assert not fig.layout.annotations, "the legend names the lines: no label sits on the bars"


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


@pytest.mark.parametrize("tokens", [[8, 5, 4, 3], [8, 5, 4, 4], [30, 5, 4, 1]])  # fair 5 = C, 5.25, 10
def test_capacity_and_fair_share_are_named_in_the_legend_not_on_the_bars(tokens):
    # "capacity C = 32" and "fair share = 32" labels ran into each other, and into the bars under them
    snap = crafted_snapshot(E=4, k=2, capacity=5)
    view = snap.layers[0]
    view.tokens_per_expert = np.array(tokens)
    view.kept_per_expert = np.minimum(view.tokens_per_expert, 5)
    fig = expert_load(snap)
    names = [t.name for t in fig.data if t.type == "scatter"]
    assert "capacity C = 5" in names and any(n.startswith("fair share") for n in names)
    assert not fig.layout.annotations
