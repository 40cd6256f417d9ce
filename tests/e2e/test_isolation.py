"""Two students on one server at the same time: neither sees the other's settings, model or history."""

from __future__ import annotations

import re

from playwright.sync_api import expect
from test_playground_browser import TIMEOUT, metric, open_app, settled, step_value


def test_two_concurrent_sessions_stay_apart(browser, app_url):
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(2)]
    try:
        check_isolation(*(c.new_page() for c in contexts), app_url)
    finally:  # a closed page stops its session's ticks: nothing keeps training behind the next test
        for c in contexts:
            c.close()


def stable_step(page, quiet_ms: int = 1500, tries: int = 20) -> int:
    """The step counter once it has stopped moving (a tick already in flight at Pause may still land)."""
    last = step_value(page)
    for _ in range(tries):
        page.wait_for_timeout(quiet_ms)
        now = step_value(page)
        if now == last:
            return now
        last = now
    raise AssertionError(f"the step counter never settled after Pause (last {last})")


def check_isolation(a, b, app_url):
    open_app(a, f"{app_url}/?experts=4&top_k=1&seed=1")
    open_app(b, f"{app_url}/?experts=12&top_k=3&router=hash&seed=2")
    a.get_by_role("button", name="Play", exact=True).click()
    expect(metric(a, "Step")).not_to_have_text("0", timeout=TIMEOUT)
    assert step_value(b) == 0, "B has not trained: A's steps are A's alone"
    b.get_by_role("button", name="Play", exact=True).click()
    expect(metric(b, "Step")).not_to_have_text("0", timeout=TIMEOUT)
    # A pauses while both train (this once failed on a busy server: the click rode on one of A's ticks as well
    # and the Play/Pause toggle ran twice; see moe_ui/state.py, click_in_fragment_rerun)
    a.get_by_role("button", name="Pause", exact=True).click()
    expect(a.get_by_role("button", name="Play", exact=True)).to_be_visible(timeout=TIMEOUT)
    settled(a)
    a_paused = stable_step(a)
    b_before = step_value(b)
    expect(metric(b, "Step")).not_to_have_text(f"{b_before:,}", timeout=TIMEOUT)  # B keeps training
    assert step_value(a) == a_paused, "A stays paused while B trains"
    # each page shows its own configuration: A's load chart has 4 experts, B's 12
    expect(a.get_by_test_id("stPlotlyChart").nth(1)).not_to_contain_text("E4")
    # B names its twelfth expert: the routing map's legend lists every expert (the load axis labels every other one
    # past 10 experts, and chart copies a redraw leaves in the page made nth(1) the map only some of the time)
    expect(b.get_by_test_id("stPlotlyChart").filter(has_text="E11").first).to_be_visible(timeout=TIMEOUT)
    expect(a).to_have_url(re.compile(r"experts=4"))
    expect(b).to_have_url(re.compile(r"experts=12"))
    # a Reset on A leaves B's run going
    a.get_by_role("button", name="Reset", exact=True).click()
    expect(metric(a, "Step")).to_have_text("0", timeout=TIMEOUT)
    b_now = step_value(b)
    expect(metric(b, "Step")).not_to_have_text(f"{b_now:,}", timeout=TIMEOUT)
