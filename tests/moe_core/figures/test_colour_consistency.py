"""Expert e has the same colour in every figure."""

from __future__ import annotations

import json
import re

import pytest
from figtools import crafted_snapshot, in_group, one, tick_colors

from moe_core import figures as F
from moe_core.figures.language import probe_text_html
from moe_core.figures.palette import expert_colors, hex_to_rgb

E = 7


def _colors_by_figure(snap, history) -> dict[str, list[str]]:
    """Expert colours as each figure states them, indexed by expert."""
    out = {}
    out["load bars"] = list(one(F.expert_load(snap), "bar", "kept (colour = expert)").marker.color)
    out["routing-map legend"] = [t.marker.color for t in in_group(F.routing_map(snap), "experts")]
    heat = one(F.capacity_buffers(snap), "heatmap")
    m = len(heat.colorscale) // 2
    out["buffers colour scale"] = [heat.colorscale[2 * e][1] for e in range(m - 2)]
    out["specialization ticks"] = tick_colors(F.specialization(snap).layout.xaxis.ticktext)
    out["co-activation ticks"] = tick_colors(F.co_activation(snap).layout.xaxis.ticktext)
    out["curves load lines"] = [t.line.color for t in F.training_curves(history, ["load"]).data]
    lang = crafted_snapshot(E=E, k=1, task="language", G=4)
    borders = re.findall(r"border-bottom:3px solid (#[0-9A-F]{6})", probe_text_html(lang))
    experts = lang.layers[0].probe_text_experts
    by_expert = {int(e): c for e, c in zip(experts, borders, strict=True)}
    out["probe text"] = [by_expert.get(e, expert_colors(E)[e]) for e in range(E)]
    out["top tokens table"] = list(F.top_tokens_figure(lang).data[0].cells.fill.color[0])
    return out


def test_every_figure_uses_the_palette_colour_of_each_expert():
    import pandas as pd

    snap = crafted_snapshot(E=E, k=2)
    history = pd.DataFrame({"step": [1, 2], **{f"load_{e}": [1.0, 2.0] for e in range(E)}})
    expected = expert_colors(E)
    for name, colors in _colors_by_figure(snap, history).items():
        assert colors == expected, name


def test_routing_map_pixels_use_the_palette_rgb():
    import numpy as np

    snap = crafted_snapshot(E=E, k=2)
    rgba = one(F.routing_map(snap), "image").z
    lut = {hex_to_rgb(c) for c in expert_colors(E)}
    assert {tuple(int(v) for v in px[:3]) for px in np.asarray(rgba).reshape(-1, 4)} <= lut


@pytest.mark.parametrize("builder", [F.routing_map, F.router_probabilities, F.specialization, F.co_activation])
def test_colour_scales_are_explicit_lists(builder):
    """Named scales would reach plotly.js unexpanded (it has different scales under the same names)."""
    for mode in (["top1", "entropy", "prediction"] if builder is F.routing_map else [None]):
        fig = builder(crafted_snapshot(E=E, task="regression")) if mode is None else \
            builder(crafted_snapshot(E=E, task="regression"), mode=mode)
        text = json.dumps(fig.to_plotly_json(), default=str)
        assert not re.search(r'"colorscale": "', text)
