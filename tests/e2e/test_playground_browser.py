"""The Playground in a real browser: live ticking, controls, shared links, presenter mode, CSV errors."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

TIMEOUT = 30_000


def metric(page: Page, label: str):
    """The value of the metric labelled exactly `label` ("Step" is not "ms / step")."""
    exact = page.get_by_test_id("stMetricLabel").filter(has_text=re.compile(rf"^{re.escape(label)}$"))
    return page.get_by_test_id("stMetric").filter(has=exact).get_by_test_id("stMetricValue").first


def step_value(page: Page) -> int:
    return int(metric(page, "Step").inner_text().replace(",", ""))


def open_app(page: Page, url: str) -> None:
    page.goto(url)
    expect(metric(page, "Step")).to_be_visible(timeout=60_000)
    settled(page)


def settled(page: Page) -> None:
    """Wait until the script is idle (only valid while paused: a ticking fragment keeps it running)."""
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=TIMEOUT)


def click_step(page: Page, expected: int) -> None:
    settled(page)
    page.get_by_role("button", name="Step", exact=True).click()
    expect(metric(page, "Step")).to_have_text(str(expected), timeout=TIMEOUT)


def test_play_advances_on_its_own_and_pause_stops(page: Page, app_url: str):
    open_app(page, app_url)
    expect(page.get_by_test_id("stPlotlyChart")).to_have_count(4, timeout=TIMEOUT)
    page.get_by_role("button", name="Play", exact=True).click()
    expect(metric(page, "Step")).not_to_have_text("0", timeout=TIMEOUT)
    first = step_value(page)
    page.wait_for_timeout(2500)
    assert step_value(page) > first, "the step counter advances with no further clicks"
    # the routing map redraws while training (every 3 s), each time from the newest snapshot with its grid
    drawn = set()
    for _ in range(40):
        title, kinds = page.evaluate("() => { const e = document.querySelector('.js-plotly-plot');"
                                     " return [JSON.stringify(e.layout.title), e.data.map(t => t.type)]; }")
        assert "heatmap" in kinds, f"the routing map lost its grid while training: {title}"
        drawn.add(title)
        page.wait_for_timeout(250)
    assert len(drawn) >= 3, f"the map redrew at least twice in 10 s of training: {drawn}"
    page.get_by_role("button", name="Pause", exact=True).click()
    expect(page.get_by_role("button", name="Play", exact=True)).to_be_visible(timeout=TIMEOUT)
    settled(page)  # paused: the script goes idle
    paused = step_value(page)
    page.wait_for_timeout(2000)
    assert step_value(page) == paused, "paused means paused"
    map_title = page.evaluate("() => JSON.stringify(document.querySelector('.js-plotly-plot').layout.title)")
    assert re.search(rf"step {paused}\b", map_title), f"paused, the map shows the headline's step: {map_title}"


def test_moving_experts_updates_the_views_and_the_url(page: Page, app_url: str):
    open_app(page, app_url)
    click_step(page, 1)
    slider = page.get_by_test_id("stSlider").filter(has_text=re.compile(r"^Experts")).get_by_role("slider")
    slider.focus()
    slider.press("ArrowRight")  # 8 -> 9 experts
    expect(page.get_by_text("the model was reset")).to_be_visible(timeout=TIMEOUT)
    expect(metric(page, "Step")).to_have_text("0", timeout=TIMEOUT)
    expect(page).to_have_url(re.compile(r"experts=9"), timeout=TIMEOUT)
    load_chart = page.get_by_test_id("stPlotlyChart").nth(1)
    expect(load_chart).to_contain_text("No training batch yet", timeout=TIMEOUT)  # step 0: nothing routed yet
    click_step(page, 1)
    expect(load_chart).to_contain_text("E8", timeout=TIMEOUT)  # the ninth expert has a bar


def test_a_copied_link_reproduces_the_run_in_a_fresh_browser(page: Page, app_url: str, browser):
    link = f"{app_url}/?experts=12&top_k=3&seed=5&capacity=1"
    readings = []
    for p in (page, browser.new_page(viewport={"width": 1400, "height": 1000})):
        open_app(p, link)
        for n in range(1, 4):
            click_step(p, n)
        readings.append((metric(p, "Test accuracy").inner_text(), metric(p, "MaxVio").inner_text(),
                         metric(p, "Dropped").inner_text()))
    assert readings[0] == readings[1], "same link, same seed: the same run"


def test_presenter_mode_and_hidden_controls(page: Page, app_url: str):
    open_app(page, f"{app_url}/?present=1&hide=router,experts")
    sidebar = page.get_by_test_id("stSidebar")
    expect(sidebar).to_have_attribute("data-collapsed", "true", timeout=TIMEOUT)
    page.get_by_test_id("stExpandSidebarButton").click()
    expect(sidebar.get_by_text("Dataset", exact=True)).to_be_visible(timeout=TIMEOUT)
    expect(sidebar.get_by_text("Router", exact=True)).to_have_count(0)
    expect(sidebar.get_by_test_id("stSlider").filter(has_text=re.compile(r"^Experts"))).to_have_count(0)


def test_csv_upload_with_errors_shows_them_by_row(page: Page, app_url: str):
    open_app(page, app_url)
    page.get_by_text("Your own points (CSV)").click()
    uploader = page.get_by_test_id("stFileUploaderDropzoneInput")
    bad = b"x,y,label\n0.1,0.2,0\nabc,0.3,1\n0.5,nan,1\n"
    uploader.set_input_files(files=[{"name": "points.csv", "mimeType": "text/csv", "buffer": bad}])
    alert = page.get_by_test_id("stAlert").filter(has_text="could not be used")
    expect(alert).to_contain_text("row 3", timeout=TIMEOUT)
    expect(alert).to_contain_text("row 4", timeout=TIMEOUT)
    click_step(page, 1)  # the session keeps working


def test_a_stale_address_bar_is_put_right_while_training_and_speed_writes_it(page: Page, app_url: str):
    """Speed reruns its own fragment, which writes the address bar and the Share link. Should that update be lost on
    the way (Streamlit drops a run's messages when it ends just as the next request is taken: rare, in a busy class),
    the ticks see the address bar the browser sends and one full run puts it right. Here the address bar is changed
    under the page (the frontend sends it while its own record of the parameters is empty, as at the defaults)."""
    open_app(page, app_url)
    page.get_by_role("button", name="Play", exact=True).click()
    expect(page.get_by_role("button", name="Pause", exact=True)).to_be_visible(timeout=TIMEOUT)
    page.evaluate("() => history.replaceState(null, '', location.pathname + '?speed=25')")
    expect(page).not_to_have_url(re.compile(r"speed="), timeout=TIMEOUT)  # the defaults again: no parameters

    slider = page.get_by_test_id("stSlider").filter(has_text=re.compile(r"^Speed")).get_by_role("slider")
    slider.focus()
    slider.press("ArrowRight")
    expect(page).to_have_url(re.compile(r"[?&]speed=21\b"), timeout=TIMEOUT)
    page.get_by_test_id("stPopoverButton").filter(has_text="Share").click()
    expect(page.get_by_test_id("stCode").filter(has_text="speed=21")).to_be_visible(timeout=TIMEOUT)
    page.keyboard.press("Escape")
    assert step_value(page) > 0, "still training"
