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


@pytest.mark.parametrize("pace", [1, 2, 3, 5])
def test_a_busy_server_divides_the_page_redraw_rate_by_its_pace_level(pace):
    chosen = list(VIEWS)
    periods = refresh_periods(chosen, pace=pace)
    assert sum(1 / p for p in periods.values() if p) <= MAX_REDRAWS_PER_S / pace + 1e-9
    calm = refresh_periods(chosen)
    assert all((periods[v] is None) == (calm[v] is None) for v in chosen)
    assert all(periods[v] >= calm[v] for v in chosen if calm[v])


def test_a_busy_server_still_ticks_more_than_once_a_second():
    from moe_ui.live import BUSY_TICK_SECONDS, TICK_SECONDS, tick_seconds

    assert tick_seconds(1) == TICK_SECONDS
    assert tick_seconds(2) == tick_seconds(4) == BUSY_TICK_SECONDS
    assert TICK_SECONDS <= BUSY_TICK_SECONDS <= 0.9, "issue #17: every student at least one tick a second"


def test_a_page_retimes_when_the_pace_moved_but_not_more_often_than_retime_s(monkeypatch):
    from moe_ui import live, scheduling

    state: dict = {}
    clock = [1000.0]
    level = [1]
    monkeypatch.setattr(live.st, "session_state", state)
    monkeypatch.setattr(live.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(scheduling, "pace_level", lambda active=None: level[0])
    assert live.page_pace("k") == 1
    assert not live.retime_due("k")
    level[0] = 3
    assert not live.retime_due("k"), "timed a moment ago: no full run yet"
    clock[0] += live.RETIME_S
    assert live.retime_due("k")
    assert live.page_pace("k") == 3 and not live.retime_due("k"), "a full run retimed the page"
    clock[0] += 10 * live.RETIME_S
    assert not live.retime_due("k"), "same pace: never a full run"


def test_timer_redraws_wait_for_the_tick_slot_and_full_runs_do_not(monkeypatch):
    from contextlib import nullcontext

    from moe_ui import live, scheduling

    state: dict = {}
    monkeypatch.setattr(live.st, "session_state", state)
    assert live.live_slot("k") is scheduling.TICK_SLOTS, "a view's own timer rerun queues like a tick"
    with live.page_run("k"):
        assert isinstance(live.live_slot("k"), nullcontext), "the learner's action never waits"
    assert live.live_slot("k") is scheduling.TICK_SLOTS
    with pytest.raises(RuntimeError), live.page_run("k"):
        raise RuntimeError("a run stopped half way")
    assert live.live_slot("k") is scheduling.TICK_SLOTS, "the mark never outlives its run"


def test_only_the_curves_build_the_history(monkeypatch):
    from moe_ui import live
    from moe_ui.views import HISTORY_VIEWS

    from moe_core.training.session import PlaygroundSession

    sess = PlaygroundSession()
    sess.step_once()
    built = []
    real = type(sess.trainer).history
    monkeypatch.setattr(type(sess.trainer), "history", property(lambda t: built.append(1) or real.fget(t)))
    assert live.view_history(sess, "load", sess.step).empty and not built
    assert set(HISTORY_VIEWS) == {"curves"}
    assert len(live.view_history(sess, "curves", sess.step)) == 1 and built


def test_while_training_the_routing_map_draws_the_newest_snapshot_with_its_grid(monkeypatch):
    """A training tick may record a snapshot without the map's grid (PlaygroundSession.newest): the headline and
    the other views draw it, the routing map the newest one with the grid."""
    from moe_ui import live, views

    from moe_core.training.session import PlaygroundSession

    monkeypatch.setattr(live.st, "session_state", {})
    sess = PlaygroundSession()
    sess.running = True
    sess.map_grid_every_s = 3600.0
    sess.tick(10.0, steps=2)
    assert sess.newest.grid_x is None
    assert live.picked_snapshot(sess, "k") is sess.newest
    for name in views.GRID_VIEWS:
        assert live.picked_snapshot(sess, "k", grid=True) is sess.latest and sess.latest.grid_x is not None, name
    sess.running = False
    assert live.picked_snapshot(sess, "k") is live.picked_snapshot(sess, "k", grid=True) is sess.latest
