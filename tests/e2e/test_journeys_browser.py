"""Learner journeys in a real browser: the paths a newcomer takes, checked the way they see them.

Every test here fails on "This app has encountered an error", on a Streamlit exception box, and (conftest's
no_server_traceback) on any traceback the app server logs meanwhile. The AppTest twin, tests/app/test_journeys.py,
takes every ordered pair of data sets and routers; here each one is entered and left at least once.
"""

from __future__ import annotations

import random
import re
from urllib.parse import parse_qsl, urlsplit

import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from test_playground_browser import TIMEOUT, metric, open_app, settled, step_value

from moe_core.layer.config import ROUTERS
from moe_core.lessons.lesson_files import learner_key, load_lessons, option_order
from moe_core.training.datasets import DATASETS
from moe_core.training.settings import PlaygroundSettings
from moe_core.views import VIEW_TITLES

ROUTER_LABELS = {  # the Router box's labels (app/moe_ui/controls.py)
    "softmax_topk": "softmax top-k", "gshard_top2": "GShard top-2", "noisy_topk": "noisy top-k",
    "switch": "switch, top-1",
    "expert_choice": "expert choice", "hash": "hash, fixed table", "soft": "soft MoE",
    "sigmoid_bias": "sigmoid + bias", "dense": "dense soft mixture",
}
# the widget label in the sidebar -> the settings field it sets
FIELD_OF_LABEL = {"Dataset": "dataset", "Noise": "noise", "Classes": "n_classes", "Arms": "n_classes", "Seed": "seed",
                  "Router": "router", "Experts": "n_experts", "Top-k": "top_k",
                  "Limit expert capacity": "capacity_factor",
                  "Capacity factor": "capacity_factor", "Overflow priority": "overflow_policy",
                  "Balancing loss": "aux_loss_coef", "Router z-loss": "z_loss_coef", "Router noise": "router_noise",
                  "Bias update rate": "bias_update_rate", "Renormalize top-k": "normalize_topk",
                  "Shared experts": "n_shared_experts", "Expert width": "expert_hidden", "Layers": "n_layers",
                  "Learning rate": "lr", "Batch size": "batch_size"}
WIDGETS = ("stSelectbox", "stSlider", "stNumberInput", "stCheckbox", "stRadio")
LESSONS = load_lessons()


# -- what the learner sees ------------------------------------------------------------------------------------
def no_error(page: Page, where: str = "") -> None:
    assert page.get_by_test_id("stException").count() == 0, f"an exception box is shown {where}"
    assert page.get_by_text("This app has encountered an error").count() == 0, f"the app crashed {where}"


def widget(page: Page, label: str, scope=None):
    """The widget container whose label is `label` (the sidebar by default)."""
    root = scope if scope is not None else page.get_by_test_id("stSidebar")
    named = page.get_by_test_id("stWidgetLabel").get_by_text(label, exact=True)
    labelled = root.locator(",".join(f'[data-testid="{t}"]' for t in WIDGETS)).filter(has=named)
    switch = root.get_by_test_id("stCheckbox").filter(has=page.get_by_text(label, exact=True))
    return labelled.or_(switch).first


def choose(page: Page, label: str, option: str, scope=None) -> None:
    """Pick `option` (a prefix of its text) in the select box `label`."""
    box = widget(page, label, scope)
    box.click()
    wanted = page.get_by_role("option", name=re.compile(rf"^{re.escape(option)}")).first
    try:
        wanted.wait_for(timeout=5_000)
    except PlaywrightTimeout:  # the list opened off screen or a rerun redrew the box: filter it by typing
        box.locator("input").press_sequentially(option[:12])
    wanted.click()
    expect(box.locator("input")).to_have_value(re.compile(rf"^{re.escape(option)}"), timeout=TIMEOUT)


def nudge(page: Page, label: str, key: str, scope=None) -> None:
    """Move a slider with the keyboard (ArrowRight, ArrowLeft, Home...)."""
    thumb = widget(page, label, scope).get_by_role("slider")
    thumb.focus()
    thumb.press(key)


def readout(page: Page, scope=None) -> dict[str, str]:
    """Every control's label and the value it shows, read from the page."""
    root = scope if scope is not None else page.get_by_test_id("stSidebar")
    return root.evaluate(
        """(root, kinds) => {
          const out = {};
          for (const el of root.querySelectorAll(kinds.map(k => `[data-testid="${k}"]`).join(","))) {
            const label = el.innerText.split("\\n")[0].trim();
            const kind = el.getAttribute("data-testid");
            const slider = el.querySelector("[aria-valuetext]");
            const input = el.querySelector("input");
            if (kind === "stSlider") out[label] = slider ? slider.getAttribute("aria-valuetext") : "";
            else if (kind === "stCheckbox") out[label] = String(input.checked);
            else if (kind === "stRadio") out[label] = [...el.querySelectorAll("label")]
                .filter(l => l.querySelector("input:checked")).map(l => l.innerText.trim()).join();
            else if (kind === "stSelectbox") out[label] = input.value;
            else out[label] = input ? input.value : "";
          }
          return out;
        }""",
        list(WIDGETS),
    )


def stable_readout(page: Page, tries: int = 20) -> dict[str, str]:
    """readout() once two reads half a second apart agree (a fresh page may still be drawing its sidebar)."""
    last = readout(page)
    for _ in range(tries):
        page.wait_for_timeout(500)
        now = readout(page)
        if now == last:
            return now
        last = now
    return last


def url_settings(url: str) -> PlaygroundSettings:
    settings, warnings = PlaygroundSettings.from_query_params(dict(parse_qsl(urlsplit(url).query)))
    assert not warnings, (url, warnings)
    return settings


def view_chips(page: Page) -> list[str]:
    box = page.get_by_test_id("stMultiSelect").filter(has_text=re.compile(r"^Views")).first
    text = box.inner_text()
    return sorted((name for name, title in VIEW_TITLES.items() if title in text),
                  key=lambda name: text.index(VIEW_TITLES[name]))


def charts_with_titles(page: Page, count: int) -> None:
    """At least `count` charts, each with a title (specialization adds a co-activation chart when k >= 2). One
    retrying check in the page: charts redraw while it runs, so no locator is held across a redraw."""
    page.wait_for_function(
        """(n) => {
          const charts = [...document.querySelectorAll('[data-testid=stPlotlyChart]')];
          return charts.length >= n && charts.every(c => (c.querySelector('.gtitle')?.textContent || '').trim());
        }""", arg=count, timeout=TIMEOUT)


# -- a. data sets and routers, paused and training, Playground and Compare ----------------------------------------
DATASET_WALK = [*[d for d in DATASETS if d != "spirals"], "spirals"]  # enter and leave every data set
ROUTER_WALK = ["switch", "expert_choice", "soft", "switch", "dense", "hash", "sigmoid_bias", "gshard_top2",
               "noisy_topk", "expert_choice", "softmax_topk"]
assert set(DATASET_WALK) == set(DATASETS) and set(ROUTER_WALK) == set(ROUTERS)


def test_data_sets_and_routers_on_the_playground(page: Page, app_url: str):
    open_app(page, app_url)
    nudge(page, "Noise", "ArrowRight")  # 0.10 -> 0.15: kept through every data set
    expect(page).to_have_url(re.compile(r"noise=0\.15"), timeout=TIMEOUT)
    for training in (False, True):
        if training:
            page.get_by_role("button", name="Play", exact=True).click()
        for name in DATASET_WALK:
            choose(page, "Dataset", name)
            if not training:
                settled(page)
                charts_with_titles(page, 4)
                page.get_by_role("button", name="Step", exact=True).click()  # the next click keeps the settings
                expect(metric(page, "Step")).to_have_text("1", timeout=TIMEOUT)
                settled(page)
            no_error(page, f"after data set {name}")
            if DATASETS[name].task != "language":
                expect(widget(page, "Noise").locator("[aria-valuetext]")).to_have_attribute("aria-valuetext", "0.15",
                                                                                             timeout=TIMEOUT)
            assert url_settings(page.url).noise == 0.15, page.url
        for name in ROUTER_WALK:
            choose(page, "Router", ROUTER_LABELS[name])
            if not training:
                settled(page)
                charts_with_titles(page, 4)
            no_error(page, f"after router {name}")
        if training:
            page.get_by_role("button", name="Pause", exact=True).click()
            expect(page.get_by_role("button", name="Play", exact=True)).to_be_visible(timeout=TIMEOUT)
    settled(page)
    assert url_settings(page.url).top_k == 2, "top-k is back to 2 after the switch router"
    no_error(page, "at the end")


def test_data_sets_and_routers_on_both_sides_of_compare(page: Page, app_url: str):
    page.goto(f"{app_url}/compare")
    expect(page.get_by_text("Configuration A")).to_be_visible(timeout=60_000)
    settled(page)
    main = page.get_by_test_id("stMain")
    for side in ("A", "B"):
        page.get_by_text(f"Configuration {side}", exact=True).click()
    sides = {s: main.get_by_test_id("stExpander").filter(has_text=f"Configuration {s}") for s in ("A", "B")}
    for name in DATASET_WALK:  # the data belongs to A; B follows
        choose(page, "Dataset", name, scope=sides["A"])
        settled(page)
        no_error(page, f"Compare A data set {name}")
        expect(widget(page, "Dataset", sides["B"]).locator("input")).to_have_value(name, timeout=TIMEOUT)
    page.get_by_role("button", name="Play", exact=True).click()
    for side in ("A", "B"):
        for name in ROUTER_WALK:
            choose(page, "Router", ROUTER_LABELS[name], scope=sides[side])
            no_error(page, f"Compare {side} router {name}")
    page.get_by_role("button", name="Pause", exact=True).click()
    settled(page)
    no_error(page, "Compare at the end")


# -- b. a seeded monkey walk --------------------------------------------------------------------------------------
SLIDERS = ["Noise", "Classes", "Arms", "Experts", "Top-k", "Capacity factor", "Balancing loss", "Router z-loss",
           "Router noise", "Bias update rate", "Shared experts", "Expert width", "Layers", "Learning rate",
           "Batch size"]
KEYS = ["ArrowRight", "ArrowLeft", "ArrowRight", "ArrowLeft", "Home"]  # never End: 64 experts x 1024 tokens


def monkey_action(page: Page, rng: random.Random) -> str:
    kind = rng.choice(["slider"] * 6 + ["select"] * 2 + ["toggle", "radio", "seed", "button", "button", "timeline"])
    sidebar = page.get_by_test_id("stSidebar")
    if kind == "slider":
        shown = [label for label in SLIDERS if widget(page, label).count()]
        label, key = rng.choice(shown), rng.choice(KEYS)
        nudge(page, label, key)
        return f"{label} {key}"
    if kind == "select":
        label = rng.choice(["Dataset", "Router"])
        box = widget(page, label).locator("input")
        box.click()
        options = page.get_by_role("option")
        try:
            options.first.wait_for(timeout=5_000)
        except PlaywrightTimeout:  # the click landed while a rerun redrew the box: open it from the keyboard
            box.press("ArrowDown")
            options.first.wait_for(timeout=TIMEOUT)
        pick = rng.randrange(options.count())
        text = options.nth(pick).inner_text()
        options.nth(pick).click()
        return f"{label} = {text}"
    if kind == "toggle":
        label = rng.choice(["Limit expert capacity", "Renormalize top-k"])
        widget(page, label).locator("label").first.click()
        return f"toggle {label}"
    if kind == "radio":
        option = rng.choice(["position", "probability"])
        radio = widget(page, "Overflow priority")
        if not radio.count():
            return "overflow (not shown: dropless)"
        radio.get_by_text(option, exact=True).click()
        return f"overflow {option}"
    if kind == "seed":
        box = widget(page, "Seed").locator("input")
        box.fill(str(rng.randrange(0, 50)))
        box.press("Enter")
        return "seed"
    if kind == "timeline":
        timeline = page.get_by_test_id("stSlider").filter(has_text=re.compile(r"^Timeline"))
        if timeline.count():
            thumb = timeline.get_by_role("slider")
            thumb.focus()
            thumb.press(rng.choice(["Home", "ArrowLeft", "ArrowRight", "End"]))
            return "timeline"
        return "timeline (not shown)"
    name = rng.choice(["Play", "Pause", "Step", "Reset", "New data"])
    button = (sidebar if name == "New data" else page.get_by_test_id("stMain")).get_by_role("button", name=name,
                                                                                          exact=True)
    if button.count() and button.first.is_enabled():
        button.first.click()
        return name
    return f"{name} (not shown)"


def pause(page: Page) -> None:
    pause_button = page.get_by_role("button", name="Pause", exact=True)
    if pause_button.count():
        pause_button.click()
    expect(page.get_by_role("button", name="Play", exact=True)).to_be_visible(timeout=TIMEOUT)
    settled(page)


def test_monkey_walk_of_200_control_changes(page: Page, app_url: str, browser):
    rng = random.Random(13)
    open_app(page, app_url)
    done = []
    for i in range(1, 201):
        done.append(monkey_action(page, rng))
        page.wait_for_timeout(150)
        no_error(page, f"after action {i}: {done[-1]} (walk: {done[-5:]})")
        if i % 50 == 0:
            pause(page)
            no_error(page, f"after {i} actions")
            shown = readout(page)
            settings = url_settings(page.url)
            for label, field in FIELD_OF_LABEL.items():
                if label in shown and field in ("dataset", "n_experts", "top_k", "n_layers", "batch_size"):
                    assert str(getattr(settings, field)) in shown[label], (label, shown[label], page.url)
            other = browser.new_page(viewport={"width": 1400, "height": 1000})
            try:
                open_app(other, page.url)
                again = stable_readout(other)
                assert again == shown, f"the link {page.url} shows {again}, the page it came from {shown}"
                assert url_settings(other.url) == settings
            finally:
                other.close()


# -- c. every lesson step by Next, Previous and deep link ---------------------------------------------------------
def check_step(page: Page, lesson, number: int, answer: bool = False) -> None:
    step = lesson.steps[number - 1]
    where = f"{lesson.slug} step {number}"
    expect(page.get_by_test_id("stProgress")).to_contain_text(f"Step {number} of {len(lesson.steps)}",
                                                              timeout=TIMEOUT)
    settled(page)
    no_error(page, where)
    assert view_chips(page) == step.views, f"{where}: views {view_chips(page)}, the step names {step.views}"
    charts_with_titles(page, len(step.views))
    shown = page.get_by_test_id("stSidebar").evaluate(
        """(root, kinds) => Object.fromEntries([...root.querySelectorAll(kinds.map(k => `[data-testid="${k}"]`)
             .join(","))].map(el => [el.innerText.split("\\n")[0].trim(), !el.querySelector("input").disabled]))""",
        list(WIDGETS))
    for label, enabled in shown.items():
        field = FIELD_OF_LABEL.get(label)
        if field is not None:
            assert enabled == (field in step.unlocked), f"{where}: {label} enabled={enabled}"
    if answer and step.check is not None:
        if step.predict is not None:  # the check appears once training has started (the prediction is locked)
            page.get_by_role("button", name="Step", exact=True).click()
            expect(page.get_by_text("A check question appears here")).to_have_count(0, timeout=TIMEOUT)
            expect(page.get_by_test_id("stMain").get_by_test_id("stRadio")).to_have_count(2, timeout=TIMEOUT)
        answer_check(page, step.check, where)


def check_options(page: Page):
    """The check question's option labels, in the order shown (options may hold LaTeX, so not found by text)."""
    answers = page.get_by_test_id("stMain").get_by_test_id("stRadio").last
    return answers.locator("label").filter(has=page.get_by_role("radio"))


def answer_check(page: Page, check, where: str) -> None:
    """Click the options in the order shown until the page says "Right.": every option before it must say
    "Not quite.", and the right one must sit where this browser's shuffle puts it (a hash of its user agent and
    address, moe_core.lessons.lesson_files.option_order; on localhost Streamlit reports no address): the order is
    shuffled,
    and the answer is checked by identity."""
    learner = learner_key(page.evaluate("navigator.userAgent"), None, None)
    shown = option_order(check.question, learner, len(check.options))
    labels = check_options(page)
    right = page.get_by_test_id("stAlert").filter(has_text="Right.")
    for position in range(len(check.options)):
        labels.nth(position).click()
        if position == shown.index(check.answer):
            expect(right).to_be_visible(timeout=TIMEOUT)
            return
        expect(page.get_by_test_id("stAlert").filter(has_text="Not quite.")).to_be_visible(timeout=TIMEOUT)
        assert right.count() == 0, f"{where}: option {position} is wrong but the page says Right."
    raise AssertionError(f"{where}: no option gave 'Right.'")


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda les: les.slug)
def test_every_lesson_step_by_next_previous_and_deep_link(page: Page, app_url: str, lesson):
    n = len(lesson.steps)
    page.goto(f"{app_url}/lessons?lesson={lesson.slug}&step=1")
    check_step(page, lesson, 1, answer=True)
    for number in range(2, n + 1):
        page.get_by_role("button", name="Next", exact=True).click()
        check_step(page, lesson, number, answer=True)
    for number in range(n - 1, 0, -1):
        page.get_by_role("button", name="Previous", exact=True).click()
        check_step(page, lesson, number)
    for number in range(n, 0, -1):
        page.goto(f"{app_url}/lessons?lesson={lesson.slug}&step={number}")
        check_step(page, lesson, number)


def test_a_lesson_reload_shows_the_check_options_in_the_same_order(page: Page, app_url: str):
    """A reload is a new Streamlit session; the order depends only on the question and this browser."""
    lesson, number = next((les, i + 1) for les in LESSONS for i, s in enumerate(les.steps) if s.check is not None)
    page.goto(f"{app_url}/lessons?lesson={lesson.slug}&step={number}")
    expect(page.get_by_test_id("stProgress")).to_contain_text(f"Step {number} of", timeout=TIMEOUT)
    expect(check_options(page)).to_have_count(len(lesson.steps[number - 1].check.options), timeout=TIMEOUT)
    before = check_options(page).all_inner_texts()
    page.reload()
    expect(page.get_by_test_id("stProgress")).to_contain_text(f"Step {number} of", timeout=TIMEOUT)
    expect(check_options(page)).to_have_count(len(before), timeout=TIMEOUT)
    assert check_options(page).all_inner_texts() == before
    no_error(page, "after a reload")


# -- d. the timeline ----------------------------------------------------------------------------------------------
def test_scrubbing_to_the_first_kept_step_shows_that_step(page: Page, app_url: str):
    open_app(page, f"{app_url}/?capacity=1")
    for n in range(1, 4):
        settled(page)
        page.get_by_role("button", name="Step", exact=True).click()
        expect(metric(page, "Step")).to_have_text(str(n), timeout=TIMEOUT)
    settled(page)
    thumb = page.get_by_test_id("stSlider").filter(has_text=re.compile(r"^Timeline")).get_by_role("slider")
    thumb.focus()
    thumb.press("Home")
    expect(metric(page, "Step")).to_have_text("0", timeout=TIMEOUT)
    settled(page)
    expect(metric(page, "MaxVio")).to_have_text("–")
    expect(metric(page, "Dropped")).to_have_text("–")
    expect(page.get_by_text("scrubbed back from step 3")).to_be_visible()
    titles = " ".join(t.text_content() for t in page.locator(".gtitle").all())
    assert "dropless" not in titles, titles
    page.get_by_role("button", name="Step", exact=True).click()  # training goes on from the newest step
    expect(metric(page, "Step")).to_have_text("4", timeout=TIMEOUT)
    no_error(page)


# -- e. Compare at equal steps ------------------------------------------------------------------------------------
def test_compare_keeps_both_sides_at_the_same_step(page: Page, app_url: str):
    page.goto(f"{app_url}/compare")
    expect(page.get_by_text("Configuration B")).to_be_visible(timeout=60_000)
    for n in (1, 2):
        settled(page)
        page.get_by_role("button", name="Step", exact=True).click()
        expect(metric(page, "Step (A / B)")).to_have_text(f"{n} / {n}", timeout=TIMEOUT)
    settled(page)
    page.get_by_text("Configuration B", exact=True).click()
    side_b = page.get_by_test_id("stMain").get_by_test_id("stExpander").filter(has_text="Configuration B")
    nudge(page, "Experts", "ArrowRight", scope=side_b)
    expect(metric(page, "Step (A / B)")).to_have_text("0 / 0", timeout=TIMEOUT)
    expect(page.get_by_text("both are compared at the same step")).to_be_visible(timeout=TIMEOUT)
    settled(page)
    page.get_by_role("button", name="Step", exact=True).click()
    expect(metric(page, "Step (A / B)")).to_have_text("1 / 1", timeout=TIMEOUT)
    assert step_value is not None
    for label in ("Step (A / B)", "Test accuracy (A / B)"):  # "97.0% / 99.3%" whole, not cut with an ellipsis
        box = metric(page, label).locator("div").first
        assert box.evaluate("e => e.scrollWidth <= e.clientWidth"), f"{label}: {box.inner_text()} is cut"
    no_error(page)


# -- labels that fit ----------------------------------------------------------------------------------------------
def test_the_curves_box_has_a_row_of_its_own(page: Page, app_url: str):
    open_app(page, app_url)  # it sat in a narrow column where added curves were hidden
    views = page.get_by_test_id("stMultiSelect").filter(has_text=re.compile(r"^Views")).first.bounding_box()
    curves = page.get_by_test_id("stMultiSelect").filter(has_text=re.compile(r"^Curves")).first.bounding_box()
    assert curves["width"] > 0.6 * views["width"], "the Curves box has room for the curves a learner adds"


def test_the_headline_numbers_stay_put_while_training(page: Page, app_url: str):
    """One row of equal widths: a number that grows a digit (Step 99 -> 100) must not push its neighbours."""
    open_app(page, app_url)
    settled(page)
    page.get_by_role("button", name="Play", exact=True).click()
    numbers = page.get_by_test_id("stMetric")
    expect(metric(page, "Step")).not_to_have_text("0", timeout=TIMEOUT)
    first = [numbers.nth(i).bounding_box() for i in range(numbers.count())]
    before = step_value(page)
    expect(metric(page, "Step")).not_to_have_text(f"{before:,}", timeout=TIMEOUT)
    page.wait_for_timeout(1500)  # a few more ticks
    later = [numbers.nth(i).bounding_box() for i in range(numbers.count())]
    assert len(first) == 5 and len({round(b["y"]) for b in first}) == 1, "five numbers in one row at 1400 px"
    assert len({round(b["width"]) for b in first}) == 1, f"equal widths: {[round(b['width']) for b in first]}"
    assert [round(b["x"]) for b in later] == [round(b["x"]) for b in first], "no number moved while training"
    page.get_by_role("button", name="Pause", exact=True).click()
    no_error(page)


# -- f. a lesson's A/B step and expert choice's tokens left behind -------------------------------------------------
def test_an_a_b_step_reached_by_next_shows_both_runs(page: Page, app_url: str):
    lesson, number = next((les, n) for les in LESSONS for n, s in enumerate(les.steps, 1)
                          if s.compare and n > 1 and not les.steps[n - 2].compare)
    step = lesson.steps[number - 1]
    page.goto(f"{app_url}/lessons?lesson={lesson.slug}&step={number - 1}")
    expect(page.get_by_test_id("stProgress")).to_contain_text(f"Step {number - 1} of", timeout=TIMEOUT)
    settled(page)
    expect(metric(page, "Step (A / B)")).to_have_count(0)
    page.get_by_role("button", name="Next", exact=True).click()
    expect(page.get_by_test_id("stProgress")).to_contain_text(f"Step {number} of", timeout=TIMEOUT)
    settled(page)
    page.get_by_role("button", name="Step", exact=True).click()
    expect(metric(page, "Step (A / B)")).to_have_text("1 / 1", timeout=TIMEOUT)
    settled(page)
    main = page.get_by_test_id("stMain")
    expect(main.get_by_text(re.compile(r"^A: "))).to_have_count(1)
    expect(main.get_by_text(re.compile(r"^B: "))).to_have_count(1)
    for view in step.views:
        expect(main.get_by_text(f"A · {VIEW_TITLES[view]}", exact=True)).to_be_visible()
        expect(main.get_by_text(f"B · {VIEW_TITLES[view]}", exact=True)).to_be_visible()
    charts_with_titles(page, 2 * len(step.views))
    boxes = [c.bounding_box() for c in main.get_by_test_id("stPlotlyChart").all()[:2]]
    assert abs(boxes[0]["y"] - boxes[1]["y"]) < 5 and boxes[1]["x"] > boxes[0]["x"] + boxes[0]["width"] / 2, \
        "A's and B's first view side by side"
    expect(page.get_by_role("button", name="Reset both", exact=True)).to_be_visible()
    no_error(page)


def test_expert_choice_headline_and_load_view_show_the_tokens_left_behind(page: Page, app_url: str):
    open_app(page, f"{app_url}/?router=expert_choice&capacity=0.5")
    expect(metric(page, "Left behind")).to_have_text("–")
    expect(metric(page, "Dropped")).to_have_count(0)
    page.get_by_role("button", name="Step", exact=True).click()
    expect(metric(page, "Step")).to_have_text("1", timeout=TIMEOUT)
    share = float(metric(page, "Left behind").inner_text().rstrip("%"))
    # E experts x C = 0.5 * k * T / E picks = T picks (k = 2) and experts pick some tokens twice: some are left over
    assert share > 0.0
    settled(page)
    page.wait_for_function(
        "() => [...document.querySelectorAll('.gtitle')].some(t => /left behind/.test(t.textContent))",
        timeout=TIMEOUT)
    no_error(page)


def test_a_lesson_budget_reached_by_the_play_click_itself_shows_play_again(page: Page, app_url: str):
    """The smallest budget fits in the tick of the Play click's own run: the page must still flip to Play."""
    lesson, number = min(((les, i + 1) for les in LESSONS for i, s in enumerate(les.steps) if s.budget),
                         key=lambda pair: pair[0].steps[pair[1] - 1].budget)
    budget = lesson.steps[number - 1].budget
    page.goto(f"{app_url}/lessons?lesson={lesson.slug}&step={number}")
    expect(page.get_by_test_id("stProgress")).to_contain_text(f"Step {number} of", timeout=TIMEOUT)
    page.get_by_role("button", name="Play", exact=True).click()
    expect(page.get_by_text(f"Reached this step's {budget:,} training steps")).to_be_visible(timeout=TIMEOUT)
    expect(page.get_by_role("button", name="Play", exact=True)).to_be_visible(timeout=TIMEOUT)
    expect(page.get_by_role("button", name="Pause", exact=True)).to_have_count(0)
    settled(page)
    assert step_value(page) == budget
