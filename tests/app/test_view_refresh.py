"""Views redraw on their own clocks while training: slow views less often, and never more than
MAX_REDRAWS_PER_S chart redraws a second on the page, however many views are open."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "app"))
from moe_ui.live import MAX_REDRAWS_PER_S, VIEW_REFRESH_S, refresh_periods  # noqa: E402
from moe_ui.views import VIEWS  # noqa: E402


def test_every_view_has_a_refresh_period():
    assert set(VIEW_REFRESH_S) == set(VIEWS)


@pytest.mark.parametrize("n", range(1, len(VIEWS) + 1))
def test_the_page_never_redraws_more_than_the_cap(n):
    chosen = list(VIEWS)[:n]
    periods = refresh_periods(chosen)
    assert set(periods) == set(chosen)
    rate = sum(1 / p for p in periods.values() if p)
    assert rate <= MAX_REDRAWS_PER_S + 1e-9
    for name in chosen:  # slower only: a view is never redrawn more often than its own period
        base = VIEW_REFRESH_S[name]
        assert (periods[name] is None) == (base is None)
        if base:
            assert periods[name] >= base


def test_fast_views_redraw_more_often_than_slow_ones():
    periods = refresh_periods(["curves", "routing_map"])
    assert periods["curves"] < periods["routing_map"]


def test_two_runs_side_by_side_keep_to_the_same_cap():
    chosen = ["load", "curves", "routing_map"]
    periods = refresh_periods(chosen, charts_per_view=2)
    assert 2 * sum(1 / p for p in periods.values()) <= MAX_REDRAWS_PER_S + 1e-9
    single = refresh_periods(chosen)
    assert all(periods[v] >= single[v] for v in chosen)


def test_the_views_read_the_timeline_without_writing_it(monkeypatch):
    """A view's fragment rerun may not set the value of the Timeline slider, drawn outside it (Streamlit raises
    StreamlitWidgetAlreadyInstantiatedError): picked_snapshot only reads, and gives the newest step after a Step."""
    from types import MappingProxyType

    from moe_ui import live

    from moe_core.training.session import PlaygroundSession

    sess = PlaygroundSession()
    sess.step_once()
    sess.step_once()
    steps = [s.step for s in sess.timeline]
    state = {"k_timeline": steps[1], "k_timeline_latest": steps[-1]}
    monkeypatch.setattr(live.st, "session_state", MappingProxyType(state))
    assert live.picked_snapshot(sess, "k").step == steps[1]  # scrubbed back
    sess.step_once()  # trained since the slider was drawn: the newest, without touching the state
    assert live.picked_snapshot(sess, "k").step == sess.step
    sess.running = True
    assert live.picked_snapshot(sess, "k").step == sess.step
