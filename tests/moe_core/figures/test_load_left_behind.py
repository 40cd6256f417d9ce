"""expert_load with expert choice: a "no expert" bar counts the tokens no expert picked (left behind)."""

from __future__ import annotations

from figtools import crafted_snapshot

from moe_core.figures.load import NO_EXPERT_TICK, expert_load
from moe_core.figures.palette import TITLE_CHARS


def _bar(fig, prefix: str):
    return next(t for t in fig.data if t.type == "bar" and t.name.startswith(prefix))


def test_expert_choice_shows_the_tokens_left_behind_as_a_bar_past_the_experts():
    snap = crafted_snapshot(E=4, router="expert_choice", capacity=None)
    snap.layers[0].left_behind = 7
    fig = expert_load(snap)
    bar = _bar(fig, "no expert")
    assert list(bar.y) == [7] and bar.x[0] > 3, "past the last expert"
    assert NO_EXPERT_TICK in fig.layout.xaxis.ticktext and fig.layout.xaxis.range[1] > bar.x[0]
    assert not bar.showlegend, "named on the axis: a legend entry squeezed the half-width plot"
    dropped = _bar(fig, "dropped")
    assert dropped.showlegend is False, "expert choice never drops: no 'dropped' entry"
    title = fig.layout.title.text.split("<br>")[0]
    assert "7 left behind (35.0 %)" in title and len(title) <= TITLE_CHARS  # 7 of T = 20 tokens
    assert fig.layout.yaxis.range[1] >= 7


def test_token_choice_has_no_left_behind_bar():
    fig = expert_load(crafted_snapshot(E=4))
    assert not any(t.type == "bar" and t.name.startswith("no expert") for t in fig.data)
    assert NO_EXPERT_TICK not in fig.layout.xaxis.ticktext
