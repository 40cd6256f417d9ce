"""presenter_fonts: the charts' text grows with the page's in presenter mode (?present=1)."""

from __future__ import annotations

import pandas as pd
import pytest
from figtools import HALF_WIDTH_PX, assert_panel_titles_fit, assert_valid, crafted_snapshot

from moe_core import figures as F
from moe_core.figures.palette import (
    PRESENTER_SCALE,
    SUBTITLE_CHARS,
    SUBTITLE_LINE_PX,
    presenter_fonts,
    visible_length,
    wrap_parts,
)


def _font_sizes(node, path="") -> dict[str, float]:
    """Every explicit font size below node, by its path (the template is plotly's own and left alone)."""
    out = {}
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "template":
                continue
            if key.endswith("font") and isinstance(value, dict) and isinstance(value.get("size"), (int, float)):
                out[f"{path}/{key}"] = value["size"]
            out.update(_font_sizes(value, f"{path}/{key}"))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            out.update(_font_sizes(item, f"{path}[{i}]"))
    return out


def _figures():
    snap = crafted_snapshot(E=8, k=2)
    history = pd.DataFrame({"step": [1, 2], "task_loss": [1.0, 0.5], "max_vio": [2.0, 1.0]})
    lang = crafted_snapshot(E=4, k=1, task="language", G=4)
    return {"load": F.expert_load(snap), "specialization": F.specialization(snap), "cost": F.sparsity_cost(snap),
            "routing map": F.routing_map(snap), "curves": F.training_curves(history, ["task_loss", "max_vio"]),
            "table": F.top_tokens_figure(lang), "message": F.co_activation(crafted_snapshot(E=4, k=1))}


@pytest.mark.parametrize("name", list(_figures()))
def test_every_font_and_the_figure_grow_like_a_zoom(name):
    fig = _figures()[name]
    before, as_json = fig.to_plotly_json(), fig.to_json()
    big = presenter_fonts(fig)
    after = big.to_plotly_json()
    assert fig.to_json() == as_json, "the input figure is not changed"
    sizes, bigger = _font_sizes(before), _font_sizes(after)
    assert sizes and sizes.keys() == bigger.keys()
    for path, size in sizes.items():
        assert bigger[path] == pytest.approx(size * PRESENTER_SCALE, abs=0.06), path
    assert after["layout"]["font"]["size"] >= 14 * PRESENTER_SCALE - 0.05  # inherited sizes (ticks) grow too
    m0, m1 = before["layout"]["margin"], after["layout"]["margin"]
    assert all(m1[s] == round(m0[s] * PRESENTER_SCALE) for s in "lrb")
    more = sum((lay["title"].get("subtitle", {}).get("text") or "").count("<br>") * sign
               for lay, sign in ((after["layout"], 1), (before["layout"], -1)))  # lines the re-wrap added
    assert m1["t"] == round(m0["t"] * PRESENTER_SCALE) + round(SUBTITLE_LINE_PX * PRESENTER_SCALE * more)
    plot0 = before["layout"]["height"] - m0["t"] - m0["b"]
    plot1 = after["layout"]["height"] - m1["t"] - m1["b"]
    assert plot1 == pytest.approx(plot0 * PRESENTER_SCALE, abs=2), "like a zoom: the plot grows with its text"
    assert_valid(big)


def test_subtitle_rewrapped_from_the_unwrapped_text():
    snap = crafted_snapshot(E=8, k=2, n_layers=2)
    fig = F.expert_load(snap, layer=1)
    unwrapped = fig.layout.meta["subtitle"]
    assert fig.layout.title.subtitle.text == "<br>".join(wrap_parts(unwrapped))
    sub = presenter_fonts(fig).layout.title.subtitle.text
    assert sub == "<br>".join(wrap_parts(unwrapped, int(SUBTITLE_CHARS / PRESENTER_SCALE)))
    assert all(visible_length(line) <= SUBTITLE_CHARS / PRESENTER_SCALE for line in sub.split("<br>"))


def test_panel_titles_still_fit_a_half_width_chart():
    import numpy as np

    snap = crafted_snapshot(E=8, k=2)
    assert_panel_titles_fit(presenter_fonts(F.sparsity_cost(snap)), HALF_WIDTH_PX)
    snap.extra["scaling"] = {"world_size": 4, "d_model": 64, "top_k": 2, "kept": np.full((4, 4), 9),
                             "ranks": {"experts": ["0-1", "2-3", "4-5", "6-7"], "bytes_sent": [9e4] * 4,
                                       "bytes_recv": [9e4] * 4, "modeled_wait": [0.5, 0.0, 0.2, 0.1]}}
    assert_panel_titles_fit(presenter_fonts(F.scaling_out(snap)), HALF_WIDTH_PX)


def test_scale_one_changes_nothing_and_bad_scales_are_refused():
    fig = F.expert_load(crafted_snapshot())
    assert presenter_fonts(fig, 1.0).to_json() == fig.to_json()
    for bad in (0.0, 10.0):
        with pytest.raises(ValueError, match="scale"):
            presenter_fonts(fig, bad)
