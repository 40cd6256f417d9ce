"""AppTest: a lesson's A/B step (`compare` in the step block) trains A (the preset) and B (the preset with the
step's changes) side by side: both runs' views and numbers, both paused at the budget, one transport for both,
the sidebar's controls applied to both, the prediction measured on A. And expert choice's 'Left behind'."""

from __future__ import annotations

import pytest
from apptools import fresh, metric
from streamlit.testing.v1 import AppTest

from moe_core.lessons.lesson_files import load_lessons
from moe_core.views import VIEW_TITLES

PAGE = "app_pages/lessons.py"
LESSONS = load_lessons()
AB_STEPS = [(lesson, n) for lesson in LESSONS for n, step in enumerate(lesson.steps, 1) if step.compare]


def open_step(lesson, number: int) -> AppTest:
    return fresh({"lesson": lesson.slug, "step": str(number)}, page=PAGE)


def texts(at: AppTest) -> str:
    return " ".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def test_the_lessons_have_a_b_steps():
    assert len(AB_STEPS) >= 10


@pytest.mark.parametrize("lesson, number", AB_STEPS, ids=lambda v: v.slug if hasattr(v, "slug") else str(v))
def test_an_a_b_step_shows_both_runs_side_by_side(lesson, number):
    step = lesson.steps[number - 1]
    at = open_step(lesson, number)
    a, b = at.session_state["lesson_sess"], at.session_state["lesson_sess_b"]
    assert a.settings == step.settings and b.settings == step.settings_b
    for field, value in step.compare.items():
        assert getattr(b.settings, field) == value != getattr(a.settings, field)
    shown = texts(at)
    assert "**A: " in shown and "**B: " in shown, "each column says which run it is"
    if step.compare_labels:
        assert f"**A: {step.compare_labels[0]}**" in shown and f"**B: {step.compare_labels[1]}**" in shown
    at.button(key="les_step").click().run()
    assert not at.exception and a.step == b.step == 1, "Step steps both"
    assert metric(at, "Step (A / B)") == "1 / 1"
    captions = [c.value for c in at.caption]
    for view in step.views:
        assert f"A · {VIEW_TITLES[view]}" in captions and f"B · {VIEW_TITLES[view]}" in captions, view
    assert len(at.get("plotly_chart")) >= 2 * len(step.views), "every view twice: A's and B's"
    assert at.button(key="les_reset").label == "Reset both"


def _ab_step_with_the_smallest_budget():
    return min(((les, n) for les, n in AB_STEPS if les.steps[n - 1].budget),
               key=lambda pair: pair[0].steps[pair[1] - 1].budget)


def test_both_runs_pause_at_the_budget_and_say_so():
    lesson, number = _ab_step_with_the_smallest_budget()
    budget = lesson.steps[number - 1].budget
    at = open_step(lesson, number)
    a, b = at.session_state["lesson_sess"], at.session_state["lesson_sess_b"]
    at.button(key="les_play").click().run()
    assert a.running and b.running and at.button(key="les_play").label == "Pause"
    for _ in range(600):  # AppTest runs the ticking fragment once per run
        if not (a.running or b.running):
            break
        at.run()
    assert not a.running and not b.running
    assert a.step == b.step == budget, (a.step, b.step, budget)
    message = f"Reached this step's {budget:,} training steps on both A and B"
    assert any(message in s.value for s in at.success)
    assert at.button(key="les_play").label == "Play", "the tick that paused asked for a full run: Play again"
    at.run()
    assert any(message in s.value for s in at.success)
    assert at.button(key="les_play").label == "Play"
    assert metric(at, "Step (A / B)") == f"{budget:,} / {budget:,}"
    at.button(key="les_play").click().run()  # Play goes on past the budget, both together
    at.run()
    assert a.running and b.running and a.step > budget and b.step > budget


def test_next_previous_and_deep_links_into_and_out_of_an_a_b_step():
    lesson, number = next((les, n) for les, n in AB_STEPS if n > 1 and not les.steps[n - 2].compare)
    at = open_step(lesson, number - 1)
    assert at.session_state["lesson_sess_b"] is None and metric(at, "Step") == "0"
    at.button(key="les_next").click().run()
    at.run()
    assert at.get("progress")[0].proto.text.startswith(f"Step {number} of")
    b = at.session_state["lesson_sess_b"]
    assert b is not None and b.settings == lesson.steps[number - 1].settings_b
    assert metric(at, "Step (A / B)") == "0 / 0"
    chosen = next(m for m in at.multiselect if m.label == "Views").value
    assert chosen == lesson.steps[number - 1].views
    at.button(key="les_prev").click().run()
    at.run()
    assert at.session_state["lesson_sess_b"] is None, "a single-run step drops B"
    assert not any(m.label == "Step (A / B)" for m in at.metric)
    at = open_step(lesson, number)  # a deep link
    assert at.session_state["lesson_sess_b"].settings == lesson.steps[number - 1].settings_b


def test_unlocked_controls_change_both_runs_and_the_compared_control_is_fixed():
    lesson, number = next((les, n) for les, n in AB_STEPS if "router_noise" in les.steps[n - 1].unlocked
                          and "aux_loss_coef" in les.steps[n - 1].compare)
    step = lesson.steps[number - 1]
    at = open_step(lesson, number)
    a, b = at.session_state["lesson_sess"], at.session_state["lesson_sess_b"]
    at.button(key="les_step").click().run()
    noise = next(s for s in at.slider if s.key == "les_router_noise")
    assert not noise.disabled
    assert next(s for s in at.select_slider if s.key == "les_aux_loss_coef").disabled, "the compared control"
    noise.set_value(0.2).run()
    assert not at.exception
    assert a.settings.router_noise == b.settings.router_noise == 0.2, "an unlocked control sets A and B alike"
    assert a.settings.aux_loss_coef == step.settings.aux_loss_coef
    assert b.settings.aux_loss_coef == step.compare["aux_loss_coef"], "B keeps its difference"
    assert a.step == b.step == 1, "a live change: both keep training from where they are"
    assert any("these controls set both alike" in c.value for c in at.sidebar.caption)


def test_a_shape_change_restarts_both_runs():
    lesson, number = next((les, n) for les, n in AB_STEPS if "top_k" in les.steps[n - 1].unlocked)
    at = open_step(lesson, number)
    a, b = at.session_state["lesson_sess"], at.session_state["lesson_sess_b"]
    at.button(key="les_step").click().run()
    at.button(key="les_step").click().run()
    assert a.step == b.step == 2
    k = next(s for s in at.slider if s.key == "les_top_k")
    k.set_value(k.value + 1).run()
    assert not at.exception
    assert a.settings.top_k == b.settings.top_k == k.value
    assert a.step == b.step == 0 and metric(at, "Step (A / B)") == "0 / 0"


def test_the_prediction_on_an_a_b_step_is_measured_on_a():
    lesson, number = min(((les, n) for les, n in AB_STEPS if les.steps[n - 1].predict),
                         key=lambda pair: pair[0].steps[pair[1] - 1].budget)
    step = lesson.steps[number - 1]
    at = open_step(lesson, number)
    a, b = at.session_state["lesson_sess"], at.session_state["lesson_sess_b"]
    assert any("the prediction is about **A**" in c.value for c in at.caption)
    radio = next(r for r in at.radio if r.key and r.key.startswith("predict_"))
    radio.set_value(step.predict.options[step.predict.answer]).run()
    at.button(key="les_step").click().run()
    a.tick(budget_s=300, steps=step.budget - a.step)  # train A to the budget, headless; B stays behind
    at.run()
    measured = next(m.value for m in at.markdown if m.value.startswith("**Measured**"))
    assert f"on A, at step {step.budget:,}" in measured and b.step < step.budget


def test_expert_choice_headline_shows_the_tokens_left_behind():
    lesson, number = next((les, n) for les in LESSONS for n, s in enumerate(les.steps, 1)
                          if s.preset.get("router") == "expert_choice" and not s.compare)
    at = open_step(lesson, number)
    assert metric(at, "Left behind") == "–" and not any(m.label == "Dropped" for m in at.metric)
    at.button(key="les_step").click().run()
    snap = at.session_state["lesson_sess"].latest
    expected = snap.layers[0].left_behind / snap.batch_tokens
    assert metric(at, "Left behind") == f"{expected:.1%}"
    assert any("no expert picked" in (m.help or "") for m in at.metric if m.label == "Left behind")


def _values(y) -> list[float]:
    """A trace's y values from Plotly's JSON: a list, or a typed array {"dtype", "bdata" (base64)}."""
    import base64

    import numpy as np

    if isinstance(y, dict):
        return np.frombuffer(base64.b64decode(y["bdata"]), dtype=y["dtype"]).tolist()
    return [v for v in y if v is not None]


def test_a_and_b_load_and_curves_share_one_y_scale_panel_by_panel():
    import json

    lesson, number = next((les, n) for les, n in AB_STEPS if {"load", "curves"} <= set(les.steps[n - 1].views)
                          and "aux_loss_coef" in les.steps[n - 1].compare)
    at = open_step(lesson, number)
    for _ in range(3):
        at.button(key="les_step").click().run()
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    loads = [s["layout"] for s in specs if s["layout"]["title"]["text"].startswith("Tokens per expert")]
    assert len(loads) == 2
    assert loads[0]["yaxis"]["range"] == loads[1]["yaxis"]["range"]
    a, b = at.session_state["lesson_sess"].latest, at.session_state["lesson_sess_b"].latest
    tallest = max(int(s.layers[0].tokens_per_expert.max()) for s in (a, b))
    assert loads[0]["yaxis"]["range"][1] >= tallest, "the taller side's bars fit"
    curves = [s for s in specs if s["layout"]["title"]["text"].startswith("Training curves")]
    assert len(curves) == 2
    axes = sorted(k for k in curves[0]["layout"] if k.startswith("yaxis"))
    assert len(axes) >= 2, "one panel per default curve"
    for axis in axes:
        assert curves[0]["layout"][axis]["range"] == curves[1]["layout"][axis]["range"], axis
    for spec in curves:  # every point of both runs lies inside its panel's shared range
        for trace in spec["data"]:
            lo, hi = curves[0]["layout"]["yaxis" + trace.get("yaxis", "y")[1:]]["range"]
            assert all(lo <= v <= hi for v in _values(trace["y"])), trace.get("name")


def test_a_click_on_an_a_b_step_acts_once_on_both_runs(monkeypatch):
    """The transport's callbacks skip a fragment rerun (a click can ride on a live tick too) for both runs."""
    from types import SimpleNamespace

    import streamlit.runtime.scriptrunner as scriptrunner

    at = open_step(*AB_STEPS[0])
    from moe_ui import live

    a, b = at.session_state["lesson_sess"], at.session_state["lesson_sess_b"]
    monkeypatch.setattr(scriptrunner, "get_script_run_ctx",
                        lambda suppress_warning=False: SimpleNamespace(fragment_ids_this_run=["tick"]))
    live._step(a, b)
    live._set_running(a, True, b)
    assert a.step == b.step == 0 and not (a.running or b.running), "a fragment rerun: nothing happens"
    monkeypatch.setattr(scriptrunner, "get_script_run_ctx", lambda suppress_warning=False: None)
    live._step(a, b)
    assert a.step == b.step == 1
    live._set_running(a, True, b)
    live._set_running(a, True, b)
    assert a.running and b.running, "Play twice is still Play, for both"
    live._reset(a, b)
    assert a.step == b.step == 0 and not (a.running or b.running)
