"""probe_text_html and top_tokens_figure."""

from __future__ import annotations

import re

from figtools import PROBE_TEXT, all_text, assert_valid, crafted_snapshot

from moe_core.figures.language import probe_text_html, top_tokens_figure
from moe_core.figures.palette import expert_colors

SPAN = re.compile(r'<span class="tok" style="background:([^;]+);border-bottom:3px solid (#[0-9A-F]{6})" '
                  r'title="([^"]*)">(.*?)</span>')


def test_one_span_per_character_escaped():
    snap = crafted_snapshot(task="language", G=4)
    out = probe_text_html(snap)
    spans = SPAN.findall(out)
    assert len(spans) == len(PROBE_TEXT) == out.count('class="tok"')
    shown = [s[3] for s in spans]
    assert shown[1] == "&lt;" and shown[4] == "&amp;" and shown[8] == "&gt;"
    assert "<b " not in out and "a<b" not in out  # nothing unescaped leaks into the markup


def test_colours_titles_and_newlines():
    snap = crafted_snapshot(task="language", G=4)
    experts = snap.layers[0].probe_text_experts
    colors = expert_colors(snap.n_experts)
    spans = SPAN.findall(probe_text_html(snap))
    for i, (_, border, title, _) in enumerate(spans):
        e = int(experts[i])
        assert border == colors[e]
        assert title == f"expert E{e}, domain {snap.group_names[snap.probe_text_domains[i]]}"
    newline = PROBE_TEXT.index("\n")
    assert spans[newline][3] == "⏎" and spans[PROBE_TEXT.index("\t")][3] == "⇥"
    assert probe_text_html(snap).count("</span><br>") == PROBE_TEXT.count("\n")


def test_non_language_snapshot_gives_a_note():
    assert "No probe text" in probe_text_html(crafted_snapshot())


def test_top_tokens_table_names_space_and_newline():
    snap = crafted_snapshot(task="language", G=4, E=3, k=1)
    fig = top_tokens_figure(snap)
    table = fig.data[0]
    assert table.type == "table"
    experts_col, chars_col = table.cells.values
    assert [re.sub("<.*?>", "", v) for v in experts_col] == ["E0", "E1", "E2"]
    assert "␣ space ×9" in chars_col[0] and "⏎ newline ×4" in chars_col[0] and "&lt; ×2" in chars_col[0]
    assert list(table.cells.fill.color[0]) == expert_colors(3)
    assert_valid(fig)


def test_top_tokens_outside_language_gives_a_message():
    fig = top_tokens_figure(crafted_snapshot())
    assert len(fig.data) == 0 and "language" in all_text(fig)
