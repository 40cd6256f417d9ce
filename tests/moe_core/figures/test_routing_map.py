"""routing_map: the coloured plane (2-D) and the expert strip (1-D)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from figtools import all_text, arr, assert_valid, crafted_snapshot, in_group, one, traces

from moe_core.figures.common import entropy_nats
from moe_core.figures.palette import expert_colors, hex_to_rgb
from moe_core.figures.routing_map import MAX_LEGEND_EXPERTS, MAX_POINTS, MIN_ALPHA, MODES, routing_map


def decode_experts(rgba: np.ndarray, E: int) -> np.ndarray:
    """Map each pixel's RGB back to the expert whose palette colour it is (-1 if none)."""
    lut = np.array([hex_to_rgb(c) for c in expert_colors(E)])  # (E, 3)
    match = (rgba[..., None, :3] == lut).all(-1)  # (..., E)
    assert (match.sum(-1) == 1).all(), "a pixel has no expert colour"
    return match.argmax(-1)


@pytest.mark.parametrize("E", [1, 2, 4, 9])
def test_top1_image_colours_are_the_argmax_expert(E):
    snap = crafted_snapshot(E=E, k=min(2, E))
    fig = routing_map(snap)
    probs = snap.layers[0].grid_probs
    image = one(fig, "image")
    rgba = arr(image.z)
    assert rgba.shape == (*probs.shape[:2], 4)
    np.testing.assert_array_equal(decode_experts(rgba, E), probs.argmax(-1))
    np.testing.assert_array_equal(arr(one(fig, "heatmap").z), probs.argmax(-1))  # the hover layer agrees
    assert_valid(fig)


def test_image_is_placed_on_the_grid_with_y_up():
    snap = crafted_snapshot()
    fig = routing_map(snap)
    image = one(fig, "image")
    gx, gy = snap.grid_x, snap.grid_y
    assert image.x0 == pytest.approx(gx[0]) and image.dx == pytest.approx(gx[1] - gx[0])
    assert image.y0 == pytest.approx(gy[0]) and image.dy == pytest.approx(gy[1] - gy[0])  # row 0 = lowest y
    assert fig.layout.yaxis.autorange is False and fig.layout.yaxis.range[0] < fig.layout.yaxis.range[1]
    assert fig.layout.yaxis.scaleanchor == "x"


def test_opacity_follows_confidence():
    E = 4
    snap = crafted_snapshot(E=E)
    rgba = arr(one(routing_map(snap), "image").z)
    assert rgba[0, 0, 3] == round(MIN_ALPHA * 255)  # p = 1/E: faint
    assert rgba[0, 1, 3] == 255  # p = 1: full
    p1 = snap.layers[0].grid_probs.max(-1)
    expected = MIN_ALPHA + (1 - MIN_ALPHA) * np.clip((p1 - 1 / E) / (1 - 1 / E), 0, 1)
    np.testing.assert_allclose(rgba[..., 3] / 255, expected, atol=1 / 255)


def test_single_expert_is_fully_opaque():
    rgba = arr(one(routing_map(crafted_snapshot(E=1, k=1)), "image").z)
    assert (rgba[..., 3] == 255).all()


def test_second_mode_colours_the_runner_up():
    snap = crafted_snapshot(E=5)
    fig = routing_map(snap, mode="second")
    probs = snap.layers[0].grid_probs
    expected = np.argsort(-probs, axis=-1, kind="stable")[..., 1]
    np.testing.assert_array_equal(decode_experts(arr(one(fig, "image").z), 5), expected)
    assert "second" in fig.layout.title.text.lower()


def test_second_mode_notes_k1_and_refuses_one_expert():
    assert "k = 1" in all_text(routing_map(crafted_snapshot(E=3, k=1), mode="second"))
    fig = routing_map(crafted_snapshot(E=1, k=1), mode="second")
    assert len(fig.data) == 0 and "single expert" in all_text(fig)


def test_legend_has_one_entry_per_expert_in_its_colour():
    E = 6
    fig = routing_map(crafted_snapshot(E=E))
    legend = in_group(fig, "experts")
    assert [t.name for t in legend] == [f"E{e}" for e in range(E)]
    assert [t.marker.color for t in legend] == expert_colors(E)


def test_legend_lists_only_visible_experts_when_many():
    E = 40
    snap = crafted_snapshot(E=E, k=2)
    fig = routing_map(snap)
    legend = [t.name for t in in_group(fig, "experts")]
    visible = sorted(set(snap.layers[0].grid_probs.argmax(-1).ravel().tolist()))
    assert E > MAX_LEGEND_EXPERTS and legend == [f"E{e}" for e in visible]


def test_entropy_mode_in_nats_up_to_ln_e():
    E = 8
    snap = crafted_snapshot(E=E)
    fig = routing_map(snap, mode="entropy")
    heat = one(fig, "heatmap")
    np.testing.assert_allclose(arr(heat.z), entropy_nats(snap.layers[0].grid_probs), rtol=1e-6)
    assert heat.zmin == 0 and heat.zmax == pytest.approx(math.log(E))
    assert "nats" in heat.colorbar.title.text
    assert not isinstance(heat.colorscale, str)


def test_prediction_mode_shows_predicted_class_and_true_class_points():
    snap = crafted_snapshot()
    fig = routing_map(snap, mode="prediction")
    np.testing.assert_array_equal(arr(one(fig, "heatmap").z), snap.grid_prediction)
    points = in_group(fig, "points")
    assert sum(len(arr(t.x)) for t in points) == len(snap.points_x)


def test_points_on_top_by_class_and_hideable():
    snap = crafted_snapshot()
    fig = routing_map(snap)
    points = in_group(fig, "points")
    assert sorted(t.name for t in points) == sorted(snap.group_names[c] for c in np.unique(snap.points_y))
    assert fig.data.index(points[0]) > fig.data.index(one(fig, "image"))
    assert not in_group(routing_map(snap, show_points=False), "points")


def test_many_points_are_thinned():
    snap = crafted_snapshot(n_points=MAX_POINTS + 500)
    fig = routing_map(snap)
    assert sum(len(arr(t.x)) for t in in_group(fig, "points")) == MAX_POINTS
    assert f"{MAX_POINTS} of {MAX_POINTS + 500}" in all_text(fig)


def test_regression_2d_points_coloured_by_target():
    snap = crafted_snapshot(task="regression", G=4)
    for mode in MODES:
        fig = routing_map(snap, mode=mode)
        pts = [t for t in fig.data if t.type == "scatter" and t.name and t.name.startswith("test points")]
        assert len(pts) == 1
        np.testing.assert_allclose(arr(pts[0].marker.color), snap.points_y)
        assert_valid(fig)


@pytest.mark.parametrize("mode", MODES)
def test_one_d_strip_with_data_and_prediction(mode):
    snap = crafted_snapshot(task="regression", one_d=True, E=3, k=1, capacity=None)
    fig = routing_map(snap, mode=mode)
    probs = snap.layers[0].grid_probs[0]  # (Gx, E)
    strip = one(fig, "bar")
    assert strip.xaxis == "x2" and len(arr(strip.x)) == len(snap.grid_x)
    line = one(fig, "scatter", "model prediction")
    np.testing.assert_allclose(arr(line.y), snap.grid_prediction[0])
    data = one(fig, "scatter", "test points")
    np.testing.assert_allclose(arr(data.y), snap.points_y)
    runs = np.count_nonzero(np.diff(probs.argmax(-1))) + 1
    assert len(fig.layout.shapes) == runs  # one faint band per run of the same top-1 expert
    if mode in ("top1", "prediction"):
        colors = [c.split("(")[1].split(")")[0].split(",")[:3] for c in strip.marker.color]
        rgb = np.array(colors, dtype=int)
        np.testing.assert_array_equal(decode_experts(rgb, 3), probs.argmax(-1))
    assert_valid(fig)


def test_language_snapshot_gets_a_message():
    fig = routing_map(crafted_snapshot(task="language", G=4))
    assert len(fig.data) == 0 and "language" in all_text(fig)


def test_bad_arguments_raise():
    snap = crafted_snapshot()
    with pytest.raises(ValueError, match="mode"):
        routing_map(snap, mode="top3")
    with pytest.raises(ValueError, match="layer"):
        routing_map(snap, layer=1)


def test_later_layer_and_title_say_which():
    snap = crafted_snapshot(n_layers=2)
    fig = routing_map(snap, layer=1)
    np.testing.assert_array_equal(arr(one(fig, "heatmap").z), snap.layers[1].grid_probs.argmax(-1))
    assert "layer 2 of 2" in fig.layout.title.subtitle.text and "step 42" in fig.layout.title.subtitle.text


def test_hover_names_expert_and_probabilities():
    fig = routing_map(crafted_snapshot(E=4))
    heat = one(fig, "heatmap")
    assert "top-1: E%{customdata[0]}" in heat.hovertemplate and "2nd" in heat.hovertemplate
    assert arr(heat.customdata).shape == (6, 5, 5)
    assert all(t.hoverinfo == "skip" for t in traces(fig, "image"))
