"""AppTest journeys: the orders in which a learner moves through the controls, checked fast and headless.

The browser suite (tests/e2e/test_journeys_browser.py) walks the same paths in Chromium; here every ordered
pair of data sets and of routers is taken, which a browser could not do within CI's time.
"""

from __future__ import annotations

import pytest
from apptools import fresh, metric, warnings_text
from streamlit.testing.v1 import AppTest

from moe_core.layer.config import CAUSAL_ROUTERS, FORCED_TOP_K, ROUTERS  # FORCED_TOP_K: routers that fix k
from moe_core.lessons.lesson_files import load_lessons
from moe_core.training.datasets import DATASETS
from moe_core.training.settings import PlaygroundSettings

LESSONS = load_lessons()


def every_ordered_pair(nodes: list[str]) -> list[str]:
    """A walk from nodes[0] that takes every ordered pair (a -> b, a != b) exactly once: an Euler circuit of the
    complete directed graph (Hierholzer's algorithm)."""
    unused = {a: [b for b in nodes if b != a] for a in nodes}
    stack, walk = [nodes[0]], []
    while stack:
        here = stack[-1]
        if unused[here]:
            stack.append(unused[here].pop())
        else:
            walk.append(stack.pop())
    return walk[::-1]


def test_the_walk_takes_every_ordered_pair_once():
    nodes = ["a", "b", "c", "d"]
    walk = every_ordered_pair(nodes)
    pairs = list(zip(walk, walk[1:], strict=False))
    assert len(pairs) == len(set(pairs)) == len(nodes) * (len(nodes) - 1)


def widget(at: AppTest, key: str):
    for kind in ("selectbox", "slider", "select_slider", "number_input", "toggle", "radio", "multiselect"):
        for w in getattr(at, kind):
            if w.key == key:
                return w
    raise AssertionError(f"no widget with key {key}")


def keys(at: AppTest) -> set[str]:
    return {w.key for kind in ("selectbox", "slider", "select_slider", "toggle") for w in getattr(at, kind)}


def no_error(at: AppTest, where: str) -> None:
    assert not at.exception, (where, [e.message for e in at.exception])


def chart_titles(at: AppTest) -> list[str]:
    import json

    titles = []
    for el in at.get("plotly_chart"):
        title = json.loads(el.proto.spec).get("layout", {}).get("title", {})
        titles.append(title.get("text", "") if isinstance(title, dict) else str(title))
    return titles


@pytest.mark.parametrize("page_prefix, session_key, page", [("ctl", "play", None),
                                                           ("cmpa", "cmp_a", "app_pages/compare.py")])
def test_every_ordered_pair_of_data_sets(page_prefix, session_key, page):
    at = fresh(page=page)
    widget(at, f"{page_prefix}_noise").set_value(0.35).run()
    widget(at, f"{page_prefix}_n_classes").set_value(4).run()
    for name in every_ordered_pair(list(DATASETS))[1:]:
        widget(at, f"{page_prefix}_dataset").set_value(name).run()
        no_error(at, f"-> {name}")
        settings = at.session_state[session_key].settings
        assert settings.dataset == name
        assert settings.noise == 0.35, f"-> {name}: the learner's noise is kept"
        info = DATASETS[name]
        if info.task != "language":
            assert widget(at, f"{page_prefix}_noise").value == 0.35
        if info.n_classes_range is not None:
            lo, hi = info.n_classes_range
            assert widget(at, f"{page_prefix}_n_classes").value == min(max(4, lo), min(hi, 8))
        if page is None:
            assert metric(at, "Step") == "0"
            wanted = 4  # routing map or characters by expert, load, buffers, curves
            assert len(at.get("plotly_chart")) == wanted, (name, chart_titles(at))
            if info.task == "language":
                assert any("<span" in m.value for m in at.markdown), "characters coloured by expert"


@pytest.mark.parametrize("dataset, routers", [("spirals", list(ROUTERS)), ("tokens", list(CAUSAL_ROUTERS))])
def test_every_ordered_pair_of_routers_and_top_k_comes_back_after_switch(dataset, routers):
    at = fresh({"dataset": dataset})
    widget(at, "ctl_top_k").set_value(3).run()
    was_forced = False
    for name in every_ordered_pair(routers)[1:]:
        widget(at, "ctl_router").set_value(name).run()
        no_error(at, f"-> {name}")
        settings = at.session_state["play"].settings
        assert settings.router == name
        if name in FORCED_TOP_K:  # switch is top-1, GShard top-2
            assert settings.top_k == FORCED_TOP_K[name]
        else:
            assert settings.top_k == 3, f"-> {name}: the learner's top-k (3) is back after a router that fixes k"
            if was_forced:
                assert "Top-k is back to 3" in warnings_text(at)
            if name not in ("dense", "soft"):
                assert widget(at, "ctl_top_k").value == 3
        was_forced = name in FORCED_TOP_K
        assert len(at.get("plotly_chart")) == 4


def test_compare_routers_on_both_sides_and_back():
    at = fresh(page="app_pages/compare.py")
    for side in ("cmpa", "cmpb"):
        for name in ["switch", "expert_choice", "soft", "dense", "hash", "sigmoid_bias", "gshard_top2", "noisy_topk",
                     "softmax_topk"]:
            widget(at, f"{side}_router").set_value(name).run()
            no_error(at, f"{side} -> {name}")
        assert widget(at, f"{side}_top_k").value == 2


def test_compare_resets_both_sides_when_one_changes_shape():
    at = fresh(page="app_pages/compare.py")
    for _ in range(3):
        at.button(key="cmp_step").click().run()
    a, b = at.session_state["cmp_a"], at.session_state["cmp_b"]
    assert a.step == b.step == 3
    widget(at, "cmpb_n_experts").set_value(16).run()
    no_error(at, "B experts")
    assert b.settings.n_experts == 16 and a.settings.n_experts == 8
    assert a.step == b.step == 0, "both sides start again: they are compared at the same step"
    assert "both are compared at the same step" in warnings_text(at)
    at.button(key="cmp_step").click().run()
    assert metric(at, "Step (A / B)") == "1 / 1"
    widget(at, "cmpa_lr").set_value(0.01).run()  # a live change: neither side resets
    assert a.step == b.step == 1


def test_timeline_shows_the_picked_step_everywhere():
    at = fresh({"capacity": "1.0"})
    for _ in range(4):
        at.button(key="play_step").click().run()
    history = at.session_state["play"].trainer.history
    timeline = widget(at, "play_timeline")
    timeline.set_value(2).run()
    row = history[history["step"] == 2].iloc[-1]
    assert metric(at, "Step") == "2"
    assert metric(at, "MaxVio") == f"{row['max_vio']:.2f}"
    assert metric(at, "Dropped") == f"{row['dropped_frac']:.1%}"
    assert any("scrubbed back from step 4" in c.value for c in at.caption)
    titles = " ".join(chart_titles(at))
    assert "dropless" not in titles, "step 2 ran with a capacity: no chart may call it dropless"
    timeline = widget(at, "play_timeline")
    timeline.set_value(0).run()
    assert metric(at, "Step") == "0" and metric(at, "MaxVio") == "–" and metric(at, "Dropped") == "–"
    assert "dropless" not in " ".join(chart_titles(at)), "no training batch at step 0: nothing to call dropless"
    at.button(key="play_step").click().run()  # training while scrubbed back goes to the newest step
    assert metric(at, "Step") == "5"
    last = at.session_state["play"].trainer.history.iloc[-1]
    assert metric(at, "MaxVio") == f"{last['max_vio']:.2f}"


def test_an_oversize_link_warns_before_it_trains():
    at = fresh({"experts": "64", "top_k": "64", "batch": "1024", "hidden": "256", "layers": "4"})
    assert "s per training step" in warnings_text(at)
    at = fresh()
    assert not at.warning


def test_url_warnings_show_the_text_as_typed():
    at = fresh({"router": "__import__"})
    text = " ".join(w.value for w in at.warning)
    assert r"\_\_import\_\_" in text, "escaped: Markdown would turn __import__ into a bold 'import'"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda les: les.slug)
def test_next_and_previous_show_each_steps_own_views(lesson):
    at = fresh({"lesson": lesson.slug, "step": "1"}, page="app_pages/lessons.py")
    numbers = list(range(2, len(lesson.steps) + 1)) + list(range(len(lesson.steps) - 1, 0, -1))
    for number in numbers:
        current = int(at.query_params["step"][0] if isinstance(at.query_params["step"], list)
                      else at.query_params["step"])
        at.button(key="les_next" if number > current else "les_prev").click().run()
        no_error(at, f"{lesson.slug} step {number}")
        step = lesson.steps[number - 1]
        assert at.get("progress")[0].proto.text.startswith(f"Step {number} of")
        chosen = next(m for m in at.multiselect if m.label == "Views").value
        assert chosen == step.views, f"{lesson.slug} step {number}: views {chosen}, the step names {step.views}"
        assert len(at.get("plotly_chart")) >= len(step.views)
        for field in PlaygroundSettings.__dataclass_fields__:
            w = next((w for kind in ("selectbox", "slider", "select_slider", "number_input", "toggle", "radio")
                      for w in getattr(at, kind) if w.key == f"les_{field}"), None)
            if w is not None:
                assert w.disabled == (field not in step.unlocked), f"{lesson.slug} {number}: {field}"


def test_a_lesson_step_pauses_at_its_budget_and_says_so():
    lesson, number = min(((les, i + 1) for les in LESSONS for i, step in enumerate(les.steps) if step.budget),
                         key=lambda pair: pair[0].steps[pair[1] - 1].budget)
    budget = lesson.steps[number - 1].budget
    at = fresh({"lesson": lesson.slug, "step": str(number)}, page="app_pages/lessons.py")
    sess = at.session_state["lesson_sess"]
    at.button(key="les_play").click().run()
    for _ in range(400):  # AppTest runs the ticking fragment once per run
        if not sess.running:
            break
        at.run()
    assert not sess.running and sess.step == budget, (sess.step, budget)
    assert any(f"Reached this step's {budget:,} training steps" in s.value for s in at.success)
    assert at.button(key="les_play").label == "Play", "the tick that paused asked for a full run: Play again"
    at.run()
    assert any(f"Reached this step's {budget:,} training steps" in s.value for s in at.success)
    assert at.button(key="les_play").label == "Play"
    at.button(key="les_play").click().run()  # Play goes on past the budget
    at.run()
    assert sess.running and sess.step > budget
