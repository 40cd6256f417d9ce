"""sparsity_cost: parameters, FLOPs and time in three labelled panels."""

from __future__ import annotations

import numpy as np
import pytest
from figtools import HALF_WIDTH_PX, all_text, arr, assert_panel_titles_fit, assert_valid, crafted_snapshot

from moe_core.figures.cost import human, sparsity_cost


def test_three_panels_with_the_snapshot_numbers():
    snap = crafted_snapshot(E=8, k=2)
    fig = sparsity_cost(snap)
    params, flops, ms = fig.data
    assert (params.xaxis, flops.xaxis, ms.xaxis) == ("x", "x2", "x3")
    np.testing.assert_allclose(arr(params.y), [snap.parameters["total"], snap.parameters["active"]])
    np.testing.assert_allclose(arr(flops.y), [snap.flops["total"], snap.flops["dense_equivalent"],
                                              2 * snap.parameters["total"]])
    np.testing.assert_allclose(arr(ms.y), [12.5])
    text = all_text(fig)
    assert "parameters" in text and "FLOPs per token" in text and "ms per step" in text
    assert "E = 8, k = 2" in fig.layout.title.subtitle.text
    assert_valid(fig)


def test_missing_numbers_do_not_break_it():
    snap = crafted_snapshot()
    snap.parameters, snap.flops = {}, {}
    fig = sparsity_cost(snap)
    assert_valid(fig)


@pytest.mark.parametrize("n, text", [(12, "12"), (49_664, "49.7k"), (12_345_678, "12.3M"), (float("nan"), "?")])
def test_human_numbers(n, text):
    assert human(n) == text


@pytest.mark.parametrize("width", [HALF_WIDTH_PX, 1300])
def test_panel_titles_fit_side_by_side(width):
    # "ms per training step" over the narrow third panel ran into its neighbour and off the figure
    assert_panel_titles_fit(sparsity_cost(crafted_snapshot(E=8, k=2)), width)


def test_before_the_first_step_the_time_bar_says_so_rather_than_0_ms():
    snap = crafted_snapshot()
    assert sparsity_cost(snap).data[2].text == ("12.5 ms",)
    snap.step_ms = 0.0
    assert sparsity_cost(snap).data[2].text == ("no step yet",)
