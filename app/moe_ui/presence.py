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
from collections.abc import Callable, Iterable

import streamlit as st

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


def watch(pause: Callable[[str], None], key: str = "presence") -> None:
    """Mount the hidden-tab watcher; `pause(reason)` runs when the tab goes to the background."""
    _watcher(key=key, on_hidden_change=lambda: pause("this tab was in the background"))


def pause_all(sessions: Iterable, reason: str, note: Callable[[str], None]) -> None:
    """Pause every running session and say why, once."""
    running = [s for s in sessions if s.running]
    for sess in running:
        sess.running = False
    if running:
        note(f"Training paused: {reason}. Press Play to go on.")
