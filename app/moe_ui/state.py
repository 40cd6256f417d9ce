"""Per-session state and the URL: one PlaygroundSession per browser session, never a global cache."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

import streamlit as st

from moe_core.training.session import PlaygroundSession
from moe_core.training.settings import CONTROLS, PlaygroundSettings
from moe_core.training.step_cost import slow_step_warning

HIDEABLE = {c.url for c in CONTROLS}


def click_in_fragment_rerun() -> bool:
    """True inside a widget callback that Streamlit runs as part of a fragment rerun.

    When a click coincides with a run_every tick, Streamlit's frontend sends the click's trigger twice: with the
    fragment's auto-rerun and with the full rerun the click causes, and the callback runs in both. Buttons outside
    the live fragment (Play/Pause, Step, Reset, New data) act only in the full rerun: once per click. Seen on a
    busy server as a Pause that undid itself (toggled twice)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    return bool(ctx is not None and ctx.fragment_ids_this_run)


def once_per_click(callback: Callable[..., None]) -> Callable[..., None]:
    """A button callback that acts once per click: skipped in a fragment rerun (click_in_fragment_rerun)."""

    @functools.wraps(callback)
    def act(*args, **kwargs) -> None:
        if not click_in_fragment_rerun():
            callback(*args, **kwargs)

    return act


def presenter_mode() -> bool:
    """?present=1: larger type, controls collapsed (for a projector)."""
    return str(st.query_params.get("present", "")).lower() in ("1", "true", "yes", "on")


def hidden_controls() -> set[str]:
    """?hide=router,experts hides those controls in a shared link (URL names, as TF Playground does)."""
    raw = st.query_params.get("hide", "")
    names = {part.strip() for part in str(raw).split(",") if part.strip()}
    unknown = sorted(names - HIDEABLE)
    if unknown:
        note_once(f"hide: unknown control name(s) {', '.join(unknown)[:120]} ignored; "
                  f"known names: {', '.join(sorted(HIDEABLE))}.")
    return names & HIDEABLE


def note_once(message: str) -> None:
    st.session_state.setdefault("_notes", [])
    if message not in st.session_state["_notes"]:
        st.session_state["_notes"].append(message)


def get_session(key: str = "play", from_url: bool = True) -> PlaygroundSession:
    """This browser session's run; created on first use from the URL's parameters (with warnings)."""
    if key not in st.session_state:
        settings = PlaygroundSettings()
        if from_url:
            settings, warnings = PlaygroundSettings.from_query_params(dict(st.query_params.to_dict()))
            for w in warnings:
                note_once(w)
            slow = slow_step_warning(settings)
            if slow:
                note_once(slow)
        st.session_state[key] = PlaygroundSession(settings)
    return st.session_state[key]


def _url_params(settings: PlaygroundSettings) -> dict[str, str]:
    """The address bar's parameters for these settings: the non-default ones and the UI's (present, hide)."""
    keep = {k: v for k, v in st.query_params.to_dict().items() if k in ("present", "hide")}
    return {**settings.to_query_params(), **keep}


def sync_url(settings: PlaygroundSettings) -> None:
    """Write the non-default settings to the address bar, keeping the UI parameters (present, hide...)."""
    wanted = _url_params(settings)
    if st.query_params.to_dict() != wanted:
        st.query_params.from_dict(wanted)


def url_in_sync(settings: PlaygroundSettings) -> bool:
    """Whether the address bar the browser sent with this run shows these settings."""
    return st.query_params.to_dict() == _url_params(settings)


MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:])")


def plain_text(message: str) -> str:
    """`message` escaped for st.markdown and friends: a URL value such as `__import__` shows as typed, not bold."""
    return MARKDOWN_SPECIALS.sub(r"\\\1", message)


def show_notes() -> None:
    """Warnings collected this run (bad URL values, resets), shown once each as plain text."""
    for message in st.session_state.pop("_notes", []):
        st.warning(plain_text(message), icon=":material/info:")


def present_css() -> None:
    if presenter_mode():
        st.html(
            "<style>html, body, [data-testid='stAppViewContainer'] {font-size: 20px;}"
            " h1 {font-size: 2.6rem;} [data-testid='stMetricValue'] {font-size: 2.2rem;}</style>"
        )


def share_url(settings: PlaygroundSettings) -> str:
    """The address of this page with the current settings as query parameters."""
    from urllib.parse import urlencode

    query = urlencode({**settings.to_query_params(),
                       **{k: v for k, v in st.query_params.to_dict().items() if k in ("present", "hide")}})
    base = (st.context.url or "").split("?")[0]
    if query and base.count("/") == 2:  # http://host:port has no path: the query needs one ("/?experts=4")
        base += "/"
    return f"{base}?{query}" if query else base
