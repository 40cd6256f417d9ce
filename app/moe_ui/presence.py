"""Is anyone watching? Training pauses when its tab is hidden or nobody has touched the page for IDLE_SECONDS, so
a class that leaves tabs open costs neither their laptops nor the server anything (a notice says why; Play
resumes). IDLE_SECONDS is 10 minutes unless the server sets MOE_PLAYGROUND_IDLE_SECONDS.

Hidden: a JavaScript-only component (st.components.v2) listens to the page's `visibilitychange` and sends a
trigger when the tab goes to the background. Idle: the server notes the time of each run the learner caused
(a click, a key, a moved control); the fragment's own timer reruns don't count.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

import streamlit as st

from moe_ui.state import note_once

# A server may choose another limit (docs/deploy.md): MOE_PLAYGROUND_IDLE_SECONDS=300 for a class that talks a lot.
IDLE_SECONDS = float(os.environ.get("MOE_PLAYGROUND_IDLE_SECONDS", "600"))
_TOUCHED = "presence_touched_at"

_JS = """
export default function (component) {
  const { setTriggerValue } = component;
  const report = () => { if (document.hidden) setTriggerValue("hidden", Date.now()); };
  document.addEventListener("visibilitychange", report);
  report();
  return () => document.removeEventListener("visibilitychange", report);
}
"""
_watcher = st.components.v2.component("moe_playground.presence", js=_JS)


def touched() -> None:
    """Note that the learner did something (call from a full run of the page, not from a timer rerun)."""
    st.session_state[_TOUCHED] = time.monotonic()


def idle_seconds() -> float:
    """Seconds since the learner last did something on the page (0 before the first note)."""
    return time.monotonic() - st.session_state.get(_TOUCHED, time.monotonic())


def guard(sessions: Sequence, key: str) -> None:
    """Call in the page's full run, before the live area: notes the learner's touch and mounts the hidden-tab
    watcher, which pauses `sessions` with a notice. `{key}_was_running` is cleared too: the full run the trigger
    causes already draws the paused page, so the ticking fragment need not ask for another."""
    touched()

    def hidden() -> None:
        _pause(sessions, "this tab was in the background")
        st.session_state[f"{key}_was_running"] = False

    _watcher(key=f"{key}_presence", on_hidden_change=hidden)


def pause_if_idle(sessions: Sequence) -> None:
    """Call from a timer tick: pause `sessions` when nobody has touched the page for IDLE_SECONDS."""
    if any(s.running for s in sessions) and idle_seconds() > IDLE_SECONDS:
        _pause(sessions, f"nobody has touched this page for {IDLE_SECONDS / 60:.0f} minutes")


def _pause(sessions: Sequence, reason: str) -> None:
    running = [s for s in sessions if s.running]
    for sess in running:
        sess.running = False
    if running:
        note_once(f"Training paused: {reason}. Press Play to go on.")
