"""specialization and co_activation heatmaps."""

from __future__ import annotations

import numpy as np
import pytest
from figtools import all_text, arr, assert_valid, crafted_snapshot, one, tick_colors

from moe_core.figures.palette import SUBTITLE_CHARS, TITLE_CHARS, expert_colors, visible_length
from moe_core.figures.specialization import co_activation, normalized_counts, specialization


@pytest.mark.parametrize("E", [1, 2, 8, 64])
def test_row_shares_with_group_names_and_expert_colours(E):
    snap = crafted_snapshot(E=E, k=1)
    fig = specialization(snap)
    heat = one(fig, "heatmap")
    z = arr(heat.z)
    counts = snap.layers[0].group_expert_counts
    np.testing.assert_allclose(z, counts / counts.sum(1, keepdims=True))
    np.testing.assert_allclose(z.sum(1), 1.0)
    assert list(fig.layout.yaxis.ticktext) == snap.group_names
    ticks = fig.layout.xaxis
    assert len(ticks.tickvals) <= 16
    if E <= 16:  # every expert labelled, with its colour
        assert tick_colors(ticks.ticktext) == expert_colors(E)
        assert "texttemplate" in heat and heat.texttemplate
    else:  # thinned, plain labels and no numbers in the cells, so nothing collides
        assert list(ticks.ticktext) == [f"E{e}" for e in ticks.tickvals] and not heat.texttemplate
    assert_valid(fig)


def test_title_reports_mutual_information_in_nats():
    title = specialization(crafted_snapshot()).layout.title.text
    assert "0.12 nats" in title and "class" in title


@pytest.mark.parametrize("task", ["classification", "regression", "language"])
def test_the_number_leads_a_title_short_enough_for_a_half_width_chart(task):
    # lesson 7 step 1: "Which expert handles which domain: I(expert; domain) = 0.22 nats" was cut at the edge of
    # a two-per-row chart, mid-digit, and read "I(expert; domain) = ("
    snap = crafted_snapshot(task=task, G=4)
    snap.layers[0].mutual_information = 1.3863
    title = specialization(snap).layout.title.text
    assert title.startswith("I(expert; ") and title.index("1.39 nats") < 25
    assert visible_length(title) <= TITLE_CHARS
    assert all(visible_length(line) <= SUBTITLE_CHARS
               for line in specialization(snap).layout.title.subtitle.text.split("<br>"))


def test_other_normalizations():
    counts = np.array([[2, 0], [1, 1]])
    np.testing.assert_allclose(normalized_counts(counts, "column"), [[2 / 3, 0], [1 / 3, 1]])
    np.testing.assert_allclose(normalized_counts(counts, "none"), counts)
    np.testing.assert_allclose(normalized_counts(np.zeros((2, 2)), "row"), 0)
    snap = crafted_snapshot()
    np.testing.assert_allclose(arr(one(specialization(snap, normalize="none"), "heatmap").z),
                               snap.layers[0].group_expert_counts)
    with pytest.raises(ValueError, match="normalize"):
        specialization(snap, normalize="rows")


def test_group_word_follows_the_task():
    assert "regime" in specialization(crafted_snapshot(task="regression", G=4)).layout.title.text
    assert "domain" in specialization(crafted_snapshot(task="language", G=4)).layout.title.text


def test_co_activation_heatmap_off_diagonal():
    snap = crafted_snapshot(E=5, k=2)
    fig = co_activation(snap)
    z = arr(one(fig, "heatmap").z)
    co = snap.layers[0].co_activation
    assert np.isnan(np.diag(z)).all()
    off = ~np.eye(5, dtype=bool)
    np.testing.assert_allclose(z[off], co[off])
    assert tick_colors(fig.layout.xaxis.ticktext) == expert_colors(5)
    assert_valid(fig)


@pytest.mark.parametrize("E, k", [(4, 1), (1, 1)])
def test_co_activation_explains_itself_for_k1_and_one_expert(E, k):
    fig = co_activation(crafted_snapshot(E=E, k=k))
    assert len(fig.data) == 0
    assert ("k = 1" if E > 1 else "single expert") in all_text(fig)
    assert_valid(fig)


def test_co_activation_for_expert_choice_is_a_heatmap():
    fig = co_activation(crafted_snapshot(E=4, router="expert_choice", capacity=None))
    assert [t.type for t in fig.data] == ["heatmap"]


@pytest.mark.parametrize("task, unit", [("regression", "point"), ("language", "token")])
def test_subtitle_says_first_choice_where_every_expert_runs(task, unit):
    snap = crafted_snapshot(E=4, k=4, router="dense", task=task, G=4, capacity=None)
    assert "routing slots" in specialization(snap).layout.title.subtitle.text  # the default basis
    snap.layers[0].group_counts_basis = "first_choice"
    sub = specialization(snap).layout.title.subtitle.text.replace("<br>", " ")  # wrapped to fit half width
    assert f"{unit}s by first choice (every expert runs in this router)" in sub and "slots" not in sub
    assert "first choices" in specialization(snap, normalize="column").layout.title.subtitle.text
