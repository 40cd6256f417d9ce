"""Idle tabs stop costing: training pauses when the tab goes to the background or nobody has touched the page for
the server's idle limit, with a notice that says why; Play resumes. A server of its own, with a 4 s idle limit."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from conftest import free_port, start_app, stop_app, tracebacks
from playwright.sync_api import Page, expect

TIMEOUT = 30_000
IDLE_S = 4


@pytest.fixture(scope="module")
def idle_url(artifacts) -> Iterator[str]:
    port, log = free_port(), artifacts / "streamlit-idle.log"
    before = os.environ.get("MOE_PLAYGROUND_IDLE_SECONDS")
    os.environ["MOE_PLAYGROUND_IDLE_SECONDS"] = str(IDLE_S)
    try:
        proc = start_app(port, log_path=log)
    finally:
        if before is None:
            del os.environ["MOE_PLAYGROUND_IDLE_SECONDS"]
        else:
            os.environ["MOE_PLAYGROUND_IDLE_SECONDS"] = before
    yield f"http://127.0.0.1:{port}"
    stop_app(proc)
    found = tracebacks(log.read_text(errors="replace"))
    assert not found, f"the app server logged a traceback:\n{found[0]}"


def play(page: Page, url: str) -> None:
    page.goto(url)
    page.get_by_role("button", name="Play", exact=True).click(timeout=60_000)
    expect(page.get_by_role("button", name="Pause", exact=True)).to_be_visible(timeout=TIMEOUT)


def test_a_tab_nobody_touches_pauses_and_play_resumes(page: Page, idle_url: str):
    play(page, idle_url)
    expect(page.get_by_text("nobody has touched this page")).to_be_visible(timeout=IDLE_S * 1000 + TIMEOUT)
    expect(page.get_by_role("button", name="Play", exact=True)).to_be_visible(timeout=TIMEOUT)
    page.get_by_role("button", name="Play", exact=True).click()  # a touch: training goes on
    expect(page.get_by_role("button", name="Pause", exact=True)).to_be_visible(timeout=TIMEOUT)


@pytest.mark.parametrize("path", ["/", "/compare"])  # one run, and two runs side by side (A/B lesson steps too)
def test_a_hidden_tab_pauses(page: Page, idle_url: str, path: str):
    play(page, idle_url + path)
    # Headless chromium never hides a page; the page hears the same event a real browser sends.
    page.evaluate("Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});"
                  "document.dispatchEvent(new Event('visibilitychange'))")
    expect(page.get_by_text("this tab was in the background")).to_be_visible(timeout=TIMEOUT)
    expect(page.get_by_role("button", name="Play", exact=True)).to_be_visible(timeout=TIMEOUT)
