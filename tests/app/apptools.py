"""Shared AppTest helpers for the page tests."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

ENTRY = str(Path(__file__).resolve().parents[2] / "app" / "streamlit_app.py")
TIMEOUT = 120  # the first run imports torch


def fresh(query: dict[str, str] | None = None, page: str | None = None) -> AppTest:
    """A new session on the Playground (or on `page` after the Playground, as a browser would open it),
    with `query` in the URL; fails on any exception."""
    at = AppTest.from_file(ENTRY, default_timeout=TIMEOUT)
    if page is not None:
        at.run()
    for k, v in (query or {}).items():
        at.query_params[k] = v
    if page is not None:
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def warnings_text(at: AppTest) -> str:
    """Every warning on the page as the learner reads it (notes are escaped for Markdown: drop the escapes)."""
    import re

    return " ".join(re.sub(r"\\(.)", r"\1", w.value) for w in at.warning)
