"""The expert palette and the common layout."""

from __future__ import annotations

import re

import plotly.graph_objects as go
import pytest

from moe_core.figures.palette import (
    FONT_SIZE,
    MAX_TICK_LABELS,
    NICE_STEPS,
    SUBTITLE_CHARS,
    SUBTITLE_LINE_PX,
    UIREVISION,
    base_layout,
    colorscale,
    expert_colors,
    expert_name,
    expert_ticks,
    hex_to_rgb,
    layout_dict,
    text_color_on,
    tick_step,
    visible_length,
    with_alpha,
    wrap_parts,
)

OKABE_ITO_CHROMATIC = {"#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442"}


def test_colors_are_hex_distinct_and_prefix_stable():
    all_ = expert_colors(256)
    assert len(all_) == 256 and len(set(all_)) == 256
    assert all(re.fullmatch(r"#[0-9A-F]{6}", c) for c in all_)
    for n in (1, 2, 8, 12, 13, 64):
        assert expert_colors(n) == all_[:n]  # expert e keeps its colour whatever E is


def test_first_colors_are_colour_blind_aware_and_no_grey():
    assert set(expert_colors(7)) == OKABE_ITO_CHROMATIC
    for c in expert_colors(256):
        r, g, b = hex_to_rgb(c)
        assert max(r, g, b) - min(r, g, b) > 30, f"{c} is too grey: grey means dropped/empty in the views"


@pytest.mark.parametrize("n", [0, 257, -1])
def test_colors_reject_out_of_range(n):
    with pytest.raises(ValueError, match="n_experts"):
        expert_colors(n)


def test_names_alpha_and_text_colour():
    assert [expert_name(e) for e in range(3)] == ["E0", "E1", "E2"]
    assert with_alpha("#0072B2", 0.5) == "rgba(0,114,178,0.5)"
    assert with_alpha("#FFFFFF", 2) == "rgba(255,255,255,1)"
    assert text_color_on("#F0E442") == "#111111" and text_color_on("#332288") == "#FFFFFF"


def test_expert_ticks_thin_out_above_10_with_nice_steps():
    assert expert_ticks(8)["tickvals"] == list(range(8))
    assert expert_ticks(10, colored=True)["ticktext"][9].endswith("E9")  # every expert, with its colour
    # 14 experts: 14 names were turned on their side on a half-width chart; every 2nd expert now
    assert expert_ticks(14)["tickvals"] == [0, 2, 4, 6, 8, 10, 12]
    t = expert_ticks(64)
    assert t["tickvals"] == list(range(0, 64, 8)) and t["ticktext"][1] == "E8"
    assert t["range"] == [-0.5, 63.5]
    for E in range(1, 257):
        t = expert_ticks(E, colored=True)
        assert 1 <= len(t["tickvals"]) <= MAX_TICK_LABELS and t["tickvals"][0] == 0
        assert tick_step(E) in NICE_STEPS and (E <= MAX_TICK_LABELS) == (tick_step(E) == 1)
        assert all("■" not in text for text in t["ticktext"]) or E <= MAX_TICK_LABELS


def test_base_layout_is_projector_readable_and_keeps_zoom():
    fig = base_layout(go.Figure(), "A title", 380, "a subtitle")
    go.Figure(layout=layout_dict("A title", 380, "a subtitle"))  # the plain-dict form validates too
    assert fig.layout.font.size >= 14 and FONT_SIZE >= 14
    assert fig.layout.title.text == "A title" and fig.layout.title.subtitle.text == "a subtitle"
    assert fig.layout.uirevision == UIREVISION and fig.layout.showlegend is True and fig.layout.height == 380


def test_wrap_parts_breaks_between_parts_then_words():
    assert wrap_parts("a · b") == ["a · b"]
    assert wrap_parts("aaaa · bbbb · cc", width=9) == ["aaaa", "bbbb · cc"]
    assert wrap_parts("aaaa · bb cc dd ee ff gg", width=9) == ["aaaa · bb", "cc dd ee", "ff gg"]
    tagged = "<span style='color:#fff'>a</span> · b"  # tags take no room
    assert wrap_parts(tagged + "<br>c", width=5) == [tagged, "c"]
    assert wrap_parts("x" * 12, width=5) == ["x" * 12]  # one long word keeps its line
    assert wrap_parts("") == []


def test_long_subtitles_wrap_and_the_figure_grows():
    one = layout_dict("t", 400, "a · b")
    long = "share of each domain's routing slots · 0 nats = no specialization, max 1.39 = ln 4 · layer 1 of 2"
    three = layout_dict("t", 400, long + " · " + long[:60])
    lines = three["title"]["subtitle"]["text"].split("<br>")
    assert len(lines) == 3 and all(visible_length(line) <= SUBTITLE_CHARS for line in lines)
    assert " · ".join(lines) == long + " · " + long[:60]  # nothing lost: every break was at a " · "
    assert three["margin"]["t"] == one["margin"]["t"] + 2 * SUBTITLE_LINE_PX
    assert three["height"] == one["height"] + 2 * SUBTITLE_LINE_PX  # the plot keeps its size
    assert "subtitle" not in layout_dict("t", 400)["title"] and layout_dict("t", 400)["margin"]["t"] == 60


def test_colorscale_is_explicit_and_light_to_dark_for_blues():
    scale = colorscale("Blues")
    assert scale[0][0] == 0.0 and scale[-1][0] == 1.0
    assert sum(hex_or_rgb(scale[0][1])) > sum(hex_or_rgb(scale[-1][1]))  # low = light (plotly.js' Blues is not)


def hex_or_rgb(c: str) -> tuple[int, ...]:
    return hex_to_rgb(c) if c.startswith("#") else tuple(int(v) for v in re.findall(r"\d+", c)[:3])
