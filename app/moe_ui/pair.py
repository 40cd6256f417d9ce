"""Two runs side by side (A and B): the Compare page and a lesson's A/B step share this.

Both train on the same data and seed (moe_core.lessons.lesson_files.SAME_DATA_FIELDS), the same number of steps
each tick,
and show the same views in two columns under "A: ..." / "B: ..." titles that say what differs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from moe_core.lessons.lesson_files import SAME_DATA_FIELDS
from moe_core.training.session import PlaygroundSession
from moe_core.training.settings import CONTROLS, PlaygroundSettings
from moe_core.training.snapshot import Snapshot
from moe_ui import presence, scheduling, views
from moe_ui.live import (
    BATCH_FORMAT,
    BATCH_HELP,
    QUALITY,
    TRAIN_BUDGET_S,
    batch_numbers,
    in_page_run,
    layer_suffix,
    live_slot,
    metric_row,
    metric_row_style,
    page_pace,
    page_run,
    refresh_periods,
    retime_due,
    tick_seconds,
    view_history,
    view_options,
)
from moe_ui.state import presenter_mode

SHARED_Y = ("load", "curves")  # views that A and B draw on the same y range, panel by panel
PAIR_METRIC_REM = 1.6  # Streamlit's metric value is 2.25rem: "97.0% / 99.3%" was cut at a quarter of 1280 px


def differences(a: PlaygroundSettings, b: PlaygroundSettings) -> list[tuple[str, Any, Any]]:
    """(control label, A's value, B's value) for every control where A and B differ, in the controls' order."""
    return [(c.label, getattr(a, c.field), getattr(b, c.field)) for c in CONTROLS
            if getattr(a, c.field) != getattr(b, c.field)]


def shown_value(value: Any) -> str:
    """A setting's value as a title reads it: 'on' / 'off', 'none' (no capacity), 0.01."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def side_titles(a: PlaygroundSettings, b: PlaygroundSettings,
                labels: tuple[str, str] | None = None) -> tuple[str, str]:
    """'A: ...' and 'B: ...': the given labels, else the differing controls with each side's value."""
    if labels is not None:
        return f"A: {labels[0]}", f"B: {labels[1]}"
    diff = differences(a, b)
    if not diff:
        return "A", "B"
    return ("A: " + ", ".join(f"{label} {shown_value(va)}" for label, va, _ in diff),
            "B: " + ", ".join(f"{label} {shown_value(vb)}" for label, _, vb in diff))


def keep_same_data(a: PlaygroundSession, b: PlaygroundSession) -> None:
    """B always trains on A's data and seed."""
    shared = {f: getattr(a.settings, f) for f in SAME_DATA_FIELDS}
    if any(getattr(b.settings, f) != v for f, v in shared.items()):
        b.apply(PlaygroundSettings.coerce({**vars(b.settings), **shared})[0])


def follow(a: PlaygroundSession, b: PlaygroundSession, changes: dict[str, Any]) -> None:
    """B becomes A's settings with `changes` (a lesson's A/B step: the sidebar's controls set both sides)."""
    wanted = PlaygroundSettings.coerce({**vars(a.settings), **changes})[0]
    if wanted != b.settings:
        try:
            b.apply(wanted)
        except ValueError as err:  # validated again by the trainer: B keeps its settings, and says so
            st.warning(f"B could not follow that change: {err}", icon=":material/info:")


def align(a: PlaygroundSession, b: PlaygroundSession, trainers_before: tuple[Any, Any]) -> str | None:
    """When a change rebuilt one side's model (from step 0) but not the other's, the other starts again too, so
    that both are compared at the same step. Returns the note to show, or None."""
    rebuilt = [s.trainer is not before for s, before in zip((a, b), trainers_before, strict=True)]
    if rebuilt[0] == rebuilt[1]:
        return None
    changed, follower = ("A", b) if rebuilt[0] else ("B", a)
    running = follower.running
    follower.reset()
    follower.running = running
    return (f"{changed}'s change rebuilt its model, so {'B' if changed == 'A' else 'A'} starts again too: both are "
            "compared at the same step.")


def train_both(a: PlaygroundSession, b: PlaygroundSession, stop_at: int | None = None) -> bool:
    """One live tick for both: the leading side trains for half a tick's budget (its fair share on a busy server)
    and the other then runs exactly as many steps, so the views stay aligned step for step and two runs cost
    about what one costs on the Playground. stop_at: a lesson step's budget; both pause there. True when this tick
    reached it."""
    if not (a.running or b.running):
        return False
    lead, other = (a, b) if a.running else (b, a)
    before = lead.step
    steps = lead.settings.steps_per_tick
    if stop_at is not None and before < stop_at:
        steps = min(steps, stop_at - before)  # land on the budget, not past it
    done = scheduling.live_tick(lead, TRAIN_BUDGET_S / 2, steps).steps
    if other.running and done:
        other.tick(budget_s=float("inf"), steps=done, only_if_running=True, slot=scheduling.TRAINING_SLOTS)
    if stop_at is not None and before < stop_at <= lead.step:
        a.running = b.running = False
        return True
    return False


def status(a: PlaygroundSession, b: PlaygroundSession, stop_at: int | None, reached: bool) -> None:
    for side, sess in (("A", a), ("B", b)):
        if sess.trainer.diverged:
            st.error(f"{side}: {sess.status_line}", icon=":material/error:")
    if reached:
        st.success(f"Reached this step's {stop_at:,} training steps on both A and B, enough to see what the text "
                   "describes: training paused. Press Play to go on.", icon=":material/flag:")
    elif a.running or b.running:
        rate = ""
        lead = a if a.running else b
        if lead.last_tick and lead.last_tick.seconds > 0:
            rate = f" at {lead.last_tick.steps / lead.last_tick.seconds:.0f} steps/s"
        st.success(f"Training A and B: step {a.step:,} / {b.step:,}{rate}.", icon=":material/model_training:")
    else:
        at = f"step {a.step:,}" if a.step == b.step else f"steps {a.step:,} (A) and {b.step:,} (B)"
        st.info(f"Paused at {at}.", icon=":material/pause_circle:")


def headline(sa: Snapshot, sb: Snapshot, key: str, layer: int = 0) -> None:
    """'A / B' for each number, with B minus A as the change when both are at the same step."""
    same_step = sa.step == sb.step  # deltas only between equal steps (one side may have diverged and stopped)
    na, nb = batch_numbers(sa, layer), batch_numbers(sb, layer)
    names = ["MaxVio", *(n for n in ("Dropped", "Left behind") if n in na or n in nb)]
    row = metric_row(key)
    row.metric("Step (A / B)", f"{sa.step:,} / {sb.step:,}")

    def versus(name: str, va: float | None, vb: float | None, f: str, lower_is_better: bool,
               help_text: str = "") -> None:
        """'A / B' and B minus A; no arrow when they agree to the digits shown (or steps differ)."""
        shown = [("–" if v is None else f.format(v)) for v in (va, vb)]
        delta = None
        if same_step and None not in (va, vb) and shown[0] != shown[1]:
            delta = f.format(vb - va)
        row.metric(f"{name} (A / B)", " / ".join(shown), delta=delta,
                   delta_color="inverse" if lower_is_better else "normal",
                   help=(help_text + " " if help_text else "") + "The change is B minus A.")

    label, fmt = QUALITY[sa.task]
    versus(label, sa.test_quality, sb.test_quality, fmt, sa.task == "regression")
    where = layer_suffix(sa, layer)
    for name in names:
        versus(f"{name}{where}", na.get(name), nb.get(name), BATCH_FORMAT[name], True, BATCH_HELP[name])
    if not same_step:
        st.caption(":material/info: A and B are at different steps, so no differences are shown: press "
                   "**Reset both** to compare them step for step.")


def side_by_side(sa: Snapshot, ha: pd.DataFrame, sb: Snapshot, hb: pd.DataFrame, chosen: list[str], key: str,
                 titles: tuple[str, str], layer: int = 0, options: dict | None = None) -> None:
    """Each chosen view twice, A's left and B's right, under the sides' titles."""
    side_titles_row(titles)
    for name in chosen:
        view_pair(name, sa, ha, sb, hb, key, layer, options)


def side_titles_row(titles: tuple[str, str]) -> None:
    for col, title in zip(st.columns(2), titles, strict=True):
        col.markdown(f"**{title}**")


def view_pair(name: str, sa: Snapshot, ha: pd.DataFrame, sb: Snapshot, hb: pd.DataFrame, key: str, layer: int = 0,
              options: dict | None = None) -> None:
    """One view for A (left) and B (right), on one y scale where SHARED_Y says so."""
    if name not in views.available_views(sa) or name not in views.available_views(sb):
        return
    ca, cb = st.columns(2)
    figs = same_scale(name, sa, ha, sb, hb, layer, options)
    for i, (col, side, snap, history) in enumerate(((ca, "a", sa, ha), (cb, "b", sb, hb))):
        with col:
            st.caption(f"{side.upper()} · {views.VIEWS[name]}")
            if figs is not None:
                views.chart(figs[i], key=f"{key}_{side}_{name}")
            else:
                views.render_view(name, snap, history, key=f"{key}_{side}_{name}", layer=layer, options=options)


def same_scale(name: str, sa: Snapshot, ha: pd.DataFrame, sb: Snapshot, hb: pd.DataFrame, layer: int,
               options: dict | None) -> tuple[go.Figure, go.Figure] | None:
    """A's and B's figure of a SHARED_Y view on one y range per panel, else None (drawn as usual): bars or curves
    side by side on different scales look alike when they are not (MaxVio 2.7-3 beside 2-4)."""
    if name not in SHARED_Y or not (sa.layers and sb.layers and sa.batch_tokens and sb.batch_tokens):
        return None
    if name == "curves" and ((options or {}).get("log_y") or not (len(ha) and len(hb))):
        return None  # a log axis keeps its own autorange; an empty history is a message, not a chart
    figs = tuple(views.builders(s, h, min(layer, len(s.layers) - 1), options)[name]() for s, h in ((sa, ha), (sb, hb)))
    if name == "load":
        top = max(f.layout.yaxis.range[1] for f in figs)
        for f in figs:
            f.update_yaxes(range=[0, top])
        return figs
    spans = [_y_spans(f) for f in figs]
    if set(spans[0]) != set(spans[1]):  # different panels (a metric recorded on one side only): leave them
        return None
    for axis in spans[0]:
        lo = min(spans[0][axis][0], spans[1][axis][0])
        hi = max(spans[0][axis][1], spans[1][axis][1])
        pad = 0.06 * (hi - lo) if hi > lo else 0.1 * max(abs(hi), 1.0)
        for f in figs:
            f.layout[axis].range = [lo - pad, hi + pad]
    return figs


def _y_spans(fig: go.Figure) -> dict[str, tuple[float, float]]:
    """Per y axis ('yaxis', 'yaxis2'...): the lowest and highest value its traces and horizontal lines reach."""
    values: dict[str, list[float]] = {}
    for trace in fig.data:
        if trace.y is not None:
            axis = "yaxis" + (trace.yaxis or "y")[1:]
            values.setdefault(axis, []).extend(np.asarray(trace.y, dtype=float).ravel().tolist())
    for shape in fig.layout.shapes:  # the entropy panels' uniform line, ln E
        if shape.yref and shape.yref.startswith("y") and shape.y0 is not None:
            values.setdefault("yaxis" + shape.yref[1:], []).append(float(shape.y0))
    spans = {}
    for axis, vs in values.items():
        finite = np.asarray(vs)[np.isfinite(vs)]
        if finite.size:
            spans[axis] = (float(finite.min()), float(finite.max()))
    return spans


def pair_area(a: PlaygroundSession, b: PlaygroundSession, key: str, titles: tuple[str, str],
              default_views: list[str] | None = None, allowed_views: list[str] | None = None,
              stop_at: int | None = None) -> None:
    """live.live_area's twin for two runs: a ticking fragment trains both a time-boxed chunk and draws the status
    and the headline (A / B); each view pair (A beside B) redraws in a fragment of its own, on the clock
    live.refresh_periods gives two charts per view. Ticks wait for the server's TICK_SLOTS like live_area's, and
    both pause when the tab is hidden or idle.

    stop_at: a lesson step's budget: both pause when A reaches it, and the status says so."""
    presence.guard([a, b], key)
    pace = page_pace(key)

    @st.fragment(run_every=tick_seconds(pace) if (a.running or b.running) else None)
    def tick() -> None:
        if not in_page_run(key):  # a run_every rerun, not the learner's action
            presence.pause_if_idle([a, b])
        with live_slot(key):
            status_box = st.empty()  # a yield point: a tick whose page is gone stops here (see live_area)
            running_before = a.running or b.running
            if train_both(a, b, stop_at):
                st.session_state[f"{key}_budget_done"] = (a.step, b.step)
            with status_box.container():
                reached = not (a.running or b.running) and st.session_state.get(f"{key}_budget_done") == (a.step,
                                                                                                           b.step)
                status(a, b, stop_at, reached)
            headline(a.newest, b.newest, key, layer=st.session_state.get(f"{key}_layer") or 0)
            running = a.running or b.running
            if not running and (running_before or st.session_state.get(f"{key}_was_running")):
                st.session_state[f"{key}_was_running"] = False
                st.rerun()  # training stopped inside a tick, maybe the learner's own full run's: see live_area
            st.session_state[f"{key}_was_running"] = running
            if running and retime_due(key):
                st.rerun()  # the class grew or shrank: a full run retimes the views (live.page_pace)

    with page_run(key):
        metric_row_style()
        if not presenter_mode():  # two numbers per metric: smaller digits keep "97.0% / 99.3%" whole in a column
            st.html(f"<style>[data-testid='stMetricValue'] {{font-size: {PAIR_METRIC_REM}rem;}}</style>")
        tick()
        chosen, options, layer = view_options(a.newest, key, default_views, allowed_views)
        chosen = [v for v in chosen if v in views.available_views(a.newest) and v in views.available_views(b.newest)]
        periods = refresh_periods(chosen, charts_per_view=2, pace=pace)
        side_titles_row(titles)
        for name in chosen:
            pair_fragment(a, b, key, name, periods[name], layer, options)


def pair_fragment(a: PlaygroundSession, b: PlaygroundSession, key: str, name: str, period: float | None, layer: int,
                  options: dict) -> None:
    @st.fragment(run_every=period if (a.running or b.running) and period else None)
    def draw() -> None:
        with live_slot(key):
            snap_a, snap_b = (a.latest, b.latest) if name in views.GRID_VIEWS else (a.newest, b.newest)
            view_pair(name, snap_a, view_history(a, name, a.step), snap_b, view_history(b, name, b.step), key,
                      layer, options)

    draw()
