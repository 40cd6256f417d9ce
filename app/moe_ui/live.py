"""The live part of a page: transport buttons, the ticking fragment, status, metrics, timeline and views."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import numpy as np
import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from moe_core.layer import metrics
from moe_core.training.session import PlaygroundSession
from moe_core.training.snapshot import Snapshot
from moe_ui import presence, scheduling, views
from moe_ui.state import once_per_click

TICK_SECONDS = 0.75  # fragment interval; a tick trains for at most TRAIN_BUDGET_S, well under it even on a busy server
# the interval at a pace level above 1 (scheduling.pace_level): at most 1.25 ticks a second, so a student whose
# ticks queue behind a busy class's still gets more than one (30 students on two processes: 0.85 s gave the slowest
# 1.00-1.12, 0.80 s 1.02-1.22; bench_classroom.py --replicas 2, benchmarks/README.md)
BUSY_TICK_SECONDS = 0.80
TRAIN_BUDGET_S = 0.1  # seconds of training per tick: short ticks keep clicks responsive when a class trains


# Button callbacks act once per click (moe_ui/state.py, once_per_click), and Play/Pause sets the state its
# label shows rather than toggling.
def _both(sess: PlaygroundSession, partner: PlaygroundSession | None) -> tuple[PlaygroundSession, ...]:
    return (sess,) if partner is None else (sess, partner)


@once_per_click
def _set_running(sess: PlaygroundSession, running: bool, partner: PlaygroundSession | None = None) -> None:
    for s in _both(sess, partner):
        s.running = running and not s.trainer.diverged


@once_per_click
def _step(sess: PlaygroundSession, partner: PlaygroundSession | None = None) -> None:
    for s in _both(sess, partner):
        s.running = False
        s.step_once(slot=scheduling.TRAINING_SLOTS)


@once_per_click
def _reset(sess: PlaygroundSession, partner: PlaygroundSession | None = None) -> None:
    for s in _both(sess, partner):
        s.reset()


def transport(sess: PlaygroundSession, key: str, partner: PlaygroundSession | None = None) -> None:
    """Play / Pause, Step, Reset. Callbacks change state before the rerun: fast repeated clicks are safe.

    partner: a second run (A/B) that every button drives too: Play shows Pause while both train, Step steps both,
    "Reset both" resets both."""
    sessions = _both(sess, partner)
    running = all(s.running for s in sessions)
    stuck = all(s.trainer.diverged is not None for s in sessions)
    cols = st.columns(3)
    label, icon = ("Pause", ":material/pause:") if running else ("Play", ":material/play_arrow:")
    cols[0].button(label, key=f"{key}_play", icon=icon, on_click=_set_running, args=(sess, not running, partner),
                   type="primary", disabled=stuck, width="stretch")
    cols[1].button("Step", key=f"{key}_step", icon=":material/skip_next:", on_click=_step, args=(sess, partner),
                   disabled=stuck, width="stretch")
    cols[2].button("Reset" if partner is None else "Reset both", key=f"{key}_reset", icon=":material/restart_alt:",
                   on_click=_reset, args=(sess, partner), width="stretch")


def status(sess: PlaygroundSession, line: DeltaGenerator | None = None) -> DeltaGenerator:
    """The status line, in place of `line` (an earlier status line of this run) when given. Returns it."""
    where = st if line is None else line
    if sess.status == "diverged":
        return where.error(sess.status_line, icon=":material/error:")
    if sess.status == "training":
        return where.success(sess.status_line, icon=":material/model_training:")
    return where.info(sess.status_line, icon=":material/pause_circle:")


def history_until(history: pd.DataFrame, step: int) -> pd.DataFrame:
    """The training records up to `step`: what the curves and the headline show for a scrubbed snapshot."""
    if len(history) and "step" in history.columns and history["step"].iloc[-1] > step:
        return history[history["step"] <= step]
    return history


def view_history(sess: PlaygroundSession, name: str, step: int) -> pd.DataFrame:
    """The history view `name` draws, up to `step`: empty for the views that draw a snapshot alone, so that their
    redraws skip building it."""
    return history_until(sess.trainer.history, step) if name in views.HISTORY_VIEWS else pd.DataFrame()


QUALITY = {"classification": ("Test accuracy", "{:.1%}"), "regression": ("Test MSE", "{:.4f}"),
           "language": ("Next-char accuracy", "{:.1%}")}
BATCH_HELP = {
    "MaxVio": "max load / mean load - 1 on the last training batch: 0 is perfectly balanced.",
    "Dropped": "Share of (token, expert) slots over capacity on the last training batch.",
    "Left behind": "Share of the last training batch's tokens that no expert picked: expert choice lets each "
                   "expert pick its top-C tokens, so a token may be picked by several experts or by none, and then "
                   "the MoE layer adds nothing to it (Zhou et al. 2022, arXiv:2202.09368). The load view counts "
                   "them in its 'no expert' bar.",
}
BATCH_FORMAT = {"MaxVio": "{:.2f}", "Dropped": "{:.1%}", "Left behind": "{:.1%}"}


def batch_numbers(snap: Snapshot, layer: int = 0) -> dict[str, float | None]:
    """MaxVio and Dropped (Left behind for expert choice, where nothing is ever dropped) of the last training
    batch in `layer`, the numbers its load and buffer charts draw; None before the first batch."""
    lost = "Left behind" if snap.router == "expert_choice" else "Dropped"
    if not (snap.batch_tokens and snap.layers):
        return {"MaxVio": None, lost: None}
    view = snap.layers[min(layer, len(snap.layers) - 1)]
    routed = float(np.sum(view.tokens_per_expert))
    if lost == "Left behind":
        share = view.left_behind / snap.batch_tokens
    else:
        share = 1.0 - float(np.sum(view.kept_per_expert)) / routed if routed else 0.0
    return {"MaxVio": metrics.load_summary(view.tokens_per_expert)[1], lost: share}


def layer_suffix(snap: Snapshot, layer: int) -> str:
    return f" (layer {layer + 1})" if len(snap.layers) > 1 else ""


def headline(snap: Snapshot, key: str, layer: int = 0) -> None:
    """The snapshot's numbers. MaxVio and Dropped (Left behind for expert choice) are those of the last training
    batch in the layer the views show, so they match its load and buffer charts."""
    row = metric_row(key)
    row.metric("Step", f"{snap.step:,}")
    name, fmt = QUALITY[snap.task]
    row.metric(name, fmt.format(snap.test_quality))
    where = layer_suffix(snap, layer)
    for name, value in batch_numbers(snap, layer).items():
        row.metric(f"{name}{where}", "–" if value is None else BATCH_FORMAT[name].format(value),
                   help=BATCH_HELP[name])
    row.metric("ms / step", f"{snap.step_ms:.1f}" if snap.step_ms else "–")


# Equal widths for every metric_row, so that a number that grows a digit does not shift its neighbours, and no
# wider than half the row, so that a number wrapped onto a row of its own does not stretch across it. Drawn once
# per full run (metric_row_style), not by each tick.
METRIC_ROW_CSS = ("<style>[class*='st-key-numbers-'] > div "
                  "{flex: 1 1 0; min-width: 7.5rem; max-width: calc(50% - 0.5rem);}</style>")


def metric_row(key: str) -> DeltaGenerator:
    """One row for a tick's numbers, side by side in equal widths (METRIC_ROW_CSS), wrapping on a narrow screen.
    One block: st.columns(5) sends six (the row and a block per column), and every element a tick draws costs the
    server a message each tick."""
    return st.container(horizontal=True, gap="medium", key=f"numbers-{key}")


def metric_row_style() -> None:
    st.html(METRIC_ROW_CSS)


def picked_snapshot(sess: PlaygroundSession, key: str, grid: bool = False) -> Snapshot:
    """The snapshot every number and view shows: the newest while training (grid: the newest with the routing
    map's grid, for the views that draw it), else the timeline's pick (the newest again after a Step or Play since
    the slider was last drawn). Only reads the state: fragments call it, and a fragment rerun may not write the
    value of a widget drawn outside it."""
    if sess.running:
        return sess.latest if grid else sess.newest
    if len(sess.timeline) < 2:
        return sess.latest
    steps = [s.step for s in sess.timeline]
    pick = st.session_state.get(f"{key}_timeline")
    if st.session_state.get(f"{key}_timeline_latest") != steps[-1] or pick not in steps:
        return sess.latest
    return sess.at_step(pick)


def timeline_slider(sess: PlaygroundSession, key: str) -> None:
    """While paused, a slider scrubs back through the kept snapshots; every number and view replays that step.
    Full runs only: after a Step or Play it starts again from the newest step."""
    if sess.running or len(sess.timeline) < 2:
        return
    steps = [s.step for s in sess.timeline]
    pick_key, latest_key = f"{key}_timeline", f"{key}_timeline_latest"
    if st.session_state.get(latest_key) != steps[-1] or st.session_state.get(pick_key) not in steps:
        st.session_state[pick_key] = steps[-1]  # trained since the last draw: show the newest
    st.session_state[latest_key] = steps[-1]
    step = st.select_slider("Timeline (step)", steps, key=pick_key,
                            help="Scrub back through training; the views show the model at that step.")
    if step != steps[-1]:
        st.caption(f":material/history: Showing step {step:,}, scrubbed back from step {steps[-1]:,}: every number "
                   "and view below is from that step. Step or Play continues from the newest.")


COUNTERPART = {"routing_map": "language", "language": "routing_map"}  # the same place in 2-D and in text
VIEW_STATE = ("views", "mapmode", "curves", "logy", "layer", "timeline", "timeline_latest", "was_running",
              "budget_done", "pace", "page_run")


def forget_view_state(key: str) -> None:
    """Drop the view widgets' state of the live area `key` (a lesson step left behind: the next step draws
    under a key of its own, since the browser would keep the old key's choice whatever the defaults say)."""
    for name in VIEW_STATE:
        st.session_state.pop(f"{key}_{name}", None)


def view_options(snap: Snapshot, key: str, default_views: list[str] | None = None,
                 allowed: list[str] | None = None) -> tuple[list[str], dict, int]:
    names = [v for v in views.available_views(snap) if allowed is None or v in allowed]
    default = [v for v in (default_views or views.DEFAULT_VIEWS) if v in names] or names[:2]
    picked = st.session_state.get(f"{key}_views")
    if picked is not None:  # a view the new data set lacks gives way to its counterpart (map <-> characters)
        kept = [v for v in dict.fromkeys(v if v in names else COUNTERPART.get(v, v) for v in picked) if v in names]
        if kept != picked:
            st.session_state[f"{key}_views"] = kept
    # the default only seeds a new widget: given beside a Session State value, Streamlit warns on every rerun
    chosen = st.multiselect("Views", names, default=default if picked is None else None, format_func=views.VIEWS.get,
                            key=f"{key}_views")
    options: dict = {}
    cols = st.columns([3, 2])
    if "routing_map" in chosen:
        options["map_mode"] = cols[0].segmented_control(
            "Routing map shows", ["top1", "second", "entropy", "prediction"], default="top1", key=f"{key}_mapmode",
            format_func={"top1": "1st choice", "second": "2nd choice", "entropy": "gate entropy",
                         "prediction": "prediction"}.get) or "top1"
    layer = 0
    if len(snap.layers) > 1:
        layer = cols[1].segmented_control("Layer", list(range(len(snap.layers))), default=0, key=f"{key}_layer",
                                          format_func=lambda i: f"layer {i + 1}") or 0
    if "curves" in chosen:  # a full-width row: every added curve stays visible in the box
        from moe_core.figures import METRIC_LABELS

        row = st.columns([5, 1], vertical_alignment="bottom")
        unrecorded = {"mse"} if snap.task != "regression" else {"accuracy"}
        curve_names = [m for m in METRIC_LABELS if m not in unrecorded]
        options["curves"] = row[0].multiselect("Curves", curve_names, default=views.DEFAULT_CURVES,
                                               format_func=METRIC_LABELS.get, key=f"{key}_curves")
        options["log_y"] = row[1].toggle("Log scale", key=f"{key}_logy")
    return chosen, options, layer


# Seconds between redraws of each view while training. The browser's cost is mostly Plotly redrawing charts, so
# the views that change slowly redraw less often than the headline (every tick); MAX_REDRAWS_PER_S caps the
# page's chart redraws, so a learner who opens more views gets each a little less often, never a hotter laptop.
VIEW_REFRESH_S = {"curves": 1.5, "load": 1.5, "buffers": 1.5, "routing_map": 3.0, "language": 3.0,
                  "probabilities": 3.0, "specialization": 3.0, "scaling": 3.0, "cost": 6.0, "memory": None}
MAX_REDRAWS_PER_S = 1.2
RETIME_S = 15.0  # a page retimes its views to a new pace level at most this often (a retime is a full run)


def refresh_periods(chosen: list[str], charts_per_view: int = 1, pace: int = 1) -> dict[str, float | None]:
    """Each chosen view's redraw period in seconds while training (None: drawn once, it does not change).
    charts_per_view: 2 where each view is drawn for A and for B. pace: the server's scheduling.pace_level; at
    level L the page redraws at most MAX_REDRAWS_PER_S / L charts a second."""
    base = {v: VIEW_REFRESH_S.get(v, 3.0) for v in chosen}
    rate = charts_per_view * sum(1.0 / p for p in base.values() if p)
    slower = max(1.0, rate * pace / MAX_REDRAWS_PER_S)
    return {v: (math.ceil(p * slower * 100) / 100 if p else None) for v, p in base.items()}  # up: within the cap


def page_pace(key: str) -> int:
    """The server's pace level now (scheduling.pace_level), remembered with the time for retime_due: a full run
    times the page's clocks with it (tick_seconds, refresh_periods)."""
    pace = scheduling.pace_level()
    st.session_state[f"{key}_pace"] = (pace, time.monotonic())
    return pace


def tick_seconds(pace: int) -> float:
    return TICK_SECONDS if pace <= 1 else BUSY_TICK_SECONDS


def retime_due(key: str) -> bool:
    """The server's pace level moved since this page timed its views, at least RETIME_S ago: a tick then asks
    for a full run, which times them again (a fragment cannot change its own clock)."""
    pace, at = st.session_state.get(f"{key}_pace", (1, 0.0))
    return scheduling.pace_level() != pace and time.monotonic() - at >= RETIME_S


def live_area(sess: PlaygroundSession, key: str, default_views: list[str] | None = None,
              allowed_views: list[str] | None = None, stop_at: int | None = None,
              in_sync: Callable[[], bool] | None = None) -> None:
    """The live part of a page, in fragments that rerun on their own clocks while training (no threads):
    - the tick: train a time-boxed chunk, then the status and the headline, every tick_seconds(). A timer tick
      waits for the server's scheduling.TICK_SLOTS and trains for a fair share of the server's training time; the same
      fragment inside a full run (the learner did something) does not wait;
    - one fragment per view, redrawn from the newest snapshot every refresh_periods() seconds (a timer redraw
      waits for the slot too).
    Both clocks follow the server's pace level (scheduling.pace_level): a busy server ticks a little slower and
    redraws charts less often; when the level moves, a tick asks for a full run that retimes them (retime_due).
    Paused, everything is drawn once per full run, from the timeline's pick. Training pauses when the tab is
    hidden or nobody has touched the page for presence.IDLE_SECONDS.

    stop_at: a lesson step's budget. Training pauses when it reaches that step and says so; Play goes on past it.
    in_sync: whether what the page drew outside the live area still shows in the browser (the Playground: the
    address bar). A timer tick asks for a full run when it is out of sync twice running (out_of_sync_twice)."""
    presence.guard([sess], key)
    pace = page_pace(key)

    @st.fragment(run_every=tick_seconds(pace) if sess.running else None)
    def tick() -> None:
        if not in_page_run(key):  # a run_every rerun, not the learner's action
            presence.pause_if_idle([sess])
        with live_slot(key):
            # The status line is also a yield point: a tick that waited for a slot while the learner clicked
            # (Streamlit then stops this run) ends here instead of training for a page that is gone. It says the
            # last tick's status until this tick's, so the page below does not jump while it trains.
            line = status(sess)
            running_before = sess.running
            if sess.running:
                before = sess.step
                steps = sess.settings.steps_per_tick
                if stop_at is not None and before < stop_at:
                    steps = min(steps, stop_at - before)  # land on the budget, not past it
                scheduling.live_tick(sess, TRAIN_BUDGET_S, steps)
                if stop_at is not None and before < stop_at <= sess.step:
                    sess.running = False
                    st.session_state[f"{key}_budget_done"] = sess.step
            if not sess.running and st.session_state.get(f"{key}_budget_done") == sess.step:
                line.success(f"Reached this step's {stop_at:,} training steps, enough to see what the text "
                             "describes: training paused. Press Play to go on.", icon=":material/flag:")
            else:
                status(sess, line)
            headline(picked_snapshot(sess, key), key, layer=st.session_state.get(f"{key}_layer") or 0)
            if not sess.running and (running_before or st.session_state.get(f"{key}_was_running")):
                st.session_state[f"{key}_was_running"] = False
                # training stopped inside a tick (budget, divergence, idle), maybe the tick of the learner's own full
                # run (Play with a budget within one tick): a full run redraws the rest, the Play button above too
                st.rerun()
            st.session_state[f"{key}_was_running"] = sess.running
            if sess.running and retime_due(key):
                st.rerun()  # the class grew or shrank: a full run retimes the page (page_pace)
            if in_sync is not None and not in_page_run(key) and out_of_sync_twice(key, in_sync()):
                st.rerun()  # what the page drew outside the live area was lost on the way: a full run redraws it

    with page_run(key):
        metric_row_style()
        tick()
        timeline_slider(sess, key)
        snap = picked_snapshot(sess, key)
        chosen, options, layer = view_options(snap, key, default_views, allowed_views)
        shown = [v for v in chosen if v in views.available_views(snap)]
        periods = refresh_periods(shown, pace=pace)
        if sess.running and shown:
            st.caption(":material/schedule: While training, the numbers above update every tick and each chart "
                       "every few seconds, so each chart says the step it shows. Pause to see them all at one step.")
        for row_start in range(0, len(shown), 2):
            for col, name in zip(st.columns(2), shown[row_start : row_start + 2], strict=False):
                with col:
                    live_view(sess, key, name, periods[name], layer, options)


def out_of_sync_twice(key: str, in_sync: bool) -> bool:
    """True when the page was out of sync at this tick and at the one before.

    Streamlit drops every message of a run that ends while the server is taking the browser's next request (a new
    ScriptRunner takes over, and the finished one's messages are ignored). A Speed move's fragment run lasts a few
    milliseconds, so in a busy class about 1 in 1,000 of them lost its address bar and Share link that way
    (bench_classroom.py --replicas 2, 30 students moving Speed every 2 s). The tick sees it in the address bar the
    browser sends with it. One tick out of sync is normal (the update may still be on its way): it acts on the
    second."""
    flag = f"{key}_out_of_sync"
    twice = not in_sync and st.session_state.get(flag, False)
    st.session_state[flag] = not in_sync and not twice
    return twice


@contextmanager
def page_run(key: str) -> Iterator[None]:
    """Marks the live fragments drawn inside (the tick, the views) as part of a full run, the learner's action:
    they never wait for a slot. Their own timer reruns, which run the fragment alone, do (live_slot)."""
    st.session_state[f"{key}_page_run"] = True
    try:
        yield
    finally:
        st.session_state[f"{key}_page_run"] = False


def in_page_run(key: str) -> bool:
    return bool(st.session_state.get(f"{key}_page_run"))


def live_slot(key: str) -> AbstractContextManager:
    """A timer rerun of a live fragment (a tick or a view's redraw) waits for the server's TICK_SLOTS, so that no
    chart is built while another session's tick trains (every Python thread of the process shares one interpreter
    lock: a redraw beside a training chunk made each training step ~2x slower). Inside a full run: no wait."""
    return nullcontext() if in_page_run(key) else scheduling.TICK_SLOTS


def live_view(sess: PlaygroundSession, key: str, name: str, period: float | None, layer: int,
              options: dict) -> None:
    """One view in a fragment of its own: redrawn every `period` seconds while training, once per full run else."""

    @st.fragment(run_every=period if sess.running and period else None)
    def draw() -> None:
        with live_slot(key):
            snap = picked_snapshot(sess, key, grid=name in views.GRID_VIEWS)
            history = view_history(sess, name, snap.step)
            views.render_view(name, snap, history, key=f"{key}_v_{name}", layer=layer, options=options)

    draw()
