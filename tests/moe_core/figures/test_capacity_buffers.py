"""capacity_buffers: kept / empty / dropped squares per expert (Switch Transformer Fig. 3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from figtools import all_text, arr, assert_valid, crafted_snapshot, one

from moe_core.figures.capacity_buffers import block_width, buffer_grid, capacity_buffers, slot_status
from moe_core.figures.palette import DROPPED_COLOR, EMPTY_COLOR, expert_colors


def _count(fig, E):
    """(kept, empty, dropped) squares per expert, read back from the heatmap and its customdata owner column."""
    heat = one(fig, "heatmap")
    z, owner = arr(heat.z), arr(heat.customdata)[..., 0]
    out = np.zeros((E, 3), dtype=int)
    for e in range(E):
        mine = z[owner == e]
        out[e] = [(mine == e).sum(), (mine == E).sum(), (mine == E + 1).sum()]
    return out


def _scale_color(heat, value):
    """The colour the discrete colour scale gives an integer z value."""
    lo, hi = heat.zmin, heat.zmax
    pos = (value - lo) / (hi - lo)
    for (p0, c0), (p1, _) in zip(heat.colorscale[:-1], heat.colorscale[1:], strict=True):
        if p0 <= pos < p1:
            return c0
    return heat.colorscale[-1][1]


@pytest.mark.parametrize("E, k", [(1, 1), (2, 1), (4, 2), (64, 4)])
def test_one_square_per_token_when_small(E, k):
    snap = crafted_snapshot(E=E, k=k, capacity=5)
    view = snap.layers[0]
    fig = capacity_buffers(snap)
    counts = _count(fig, E)
    np.testing.assert_array_equal(counts[:, 0], view.kept_per_expert)
    np.testing.assert_array_equal(counts[:, 1], 5 - view.kept_per_expert)
    np.testing.assert_array_equal(counts[:, 2], view.tokens_per_expert - view.kept_per_expert)
    assert "each square = 1 token" in all_text(fig)
    assert len(fig.layout.xaxis.tickvals) <= 16
    assert_valid(fig)


def test_colours_are_the_experts_then_empty_then_dropped():
    E = 5
    heat = one(capacity_buffers(crafted_snapshot(E=E)), "heatmap")
    assert [_scale_color(heat, e) for e in range(E)] == expert_colors(E)
    assert _scale_color(heat, E) == EMPTY_COLOR and _scale_color(heat, E + 1) == DROPPED_COLOR


def test_large_buffers_aggregate_and_say_so():
    snap = crafted_snapshot(E=4, capacity=300)
    view = snap.layers[0]
    view.tokens_per_expert = np.array([500, 300, 100, 0])
    view.kept_per_expert = np.minimum(view.tokens_per_expert, 300)
    fig = capacity_buffers(snap, max_slots=64)
    n = math.ceil(500 / 64)  # 8 tokens per square
    assert f"each square = {n} tokens" in all_text(fig)
    counts = _count(fig, 4)
    np.testing.assert_array_equal(counts[:, 0], -(-view.kept_per_expert // n))
    np.testing.assert_array_equal(counts[:, 2], -(-(view.tokens_per_expert - view.kept_per_expert) // n))
    assert counts.sum(1).max() <= 64 + 1


def test_capacity_line_and_title():
    snap = crafted_snapshot(E=4, capacity=5)
    fig = capacity_buffers(snap)
    line = one(fig, "scatter", "capacity C = 5")
    assert line.mode == "lines"
    n_dropped = int((snap.layers[0].tokens_per_expert - snap.layers[0].kept_per_expert).sum())
    assert f"C = 5 slots: {n_dropped} tokens dropped" in fig.layout.title.text


def test_dropless_shows_filled_slots_only():
    snap = crafted_snapshot(E=3, k=1, capacity=None)
    fig = capacity_buffers(snap)
    z = arr(one(fig, "heatmap").z)
    assert not np.isin(z, [3, 4]).any()  # no empty (E) or dropped (E + 1) squares
    np.testing.assert_array_equal(_count(fig, 3)[:, 0], snap.layers[0].tokens_per_expert)
    assert "dropless" in fig.layout.title.text and "no capacity" in fig.layout.title.text
    assert not [t for t in fig.data if t.name and t.name.startswith("capacity")]
    assert_valid(fig)


def test_slot_status_and_grid_helpers():
    np.testing.assert_array_equal(slot_status(7, 5, 5, 1), [0, 0, 0, 0, 0, 2, 2])
    np.testing.assert_array_equal(slot_status(3, 3, 5, 1), [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(slot_status(9, 9, None, 2), [0] * 5)
    z, slot = buffer_grid([slot_status(3, 3, 4, 1), slot_status(0, 0, 4, 1)], w=2)
    assert z.shape == (2, 5)  # 2 experts x 2 columns + 1 blank separator column
    np.testing.assert_array_equal(z[0], [0, 0, np.nan, 2, 2])
    np.testing.assert_array_equal(slot[1], [2, 3, -1, 2, 3])
    assert 1 <= block_width(8, 64) <= 8 and block_width(64, 64) == 1


def test_max_slots_must_be_positive():
    with pytest.raises(ValueError, match="max_slots"):
        capacity_buffers(crafted_snapshot(), max_slots=0)
