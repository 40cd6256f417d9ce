"""Hostile input through the app: each case gets a specific message and the session keeps working."""

from __future__ import annotations

import pytest
import torch
from apptools import fresh, metric, warnings_text
from streamlit.testing.v1 import AppTest


def step_metric(at: AppTest) -> str:
    return metric(at, "Step")


@pytest.mark.parametrize("query, fragment", [
    ({"capacity": "0"}, "capacity='0': out of range"),
    ({"capacity": "-1"}, "out of range"),
    ({"experts": "1e400"}, "out of range"),
    ({"lr": "NaN"}, "not a finite number"),
    ({"batch": "1024.5"}, "not a whole number"),
    ({"dataset": "tokens", "router": "expert_choice"}, "non-causal"),
    ({"router": "switch", "top_k": "4"}, "exactly one expert"),
    ({"hide": "nonsense"}, "unknown control name"),
    ({"foo": "bar"}, "Unknown URL parameter 'foo'"),
])
def test_bad_parameters_get_a_specific_message(query, fragment):
    at = fresh(query)
    assert fragment in warnings_text(at), warnings_text(at)
    at.button(key="play_step").click().run()
    assert not at.exception and step_metric(at) == "1"


def test_a_diverging_run_stops_with_a_reason_and_the_page_survives():
    at = fresh({"lr": "100"})
    sess = at.session_state["play"]
    at.button(key="play_step").click().run()
    with torch.no_grad():
        sess.trainer.model.head.weight.fill_(float("nan"))  # what lr = 100 eventually does to some runs
    at.button(key="play_play").click().run()
    at.run()
    assert not at.exception
    assert sess.status == "diverged" and not sess.running
    assert any("Training stopped" in e.value for e in at.error)
    assert at.button(key="play_play").disabled and at.button(key="play_step").disabled
    at.button(key="play_reset").click().run()
    assert sess.status == "paused" and step_metric(at) == "0", "Reset recovers"
    at.button(key="play_step").click().run()
    assert step_metric(at) == "1"


def test_learning_rate_100_trains_without_crashing():
    at = fresh({"lr": "100", "speed": "50"})
    at.button(key="play_play").click().run()
    for _ in range(3):
        at.run()
    assert not at.exception
    sess = at.session_state["play"]
    assert sess.status in ("training", "diverged")
    assert all(torch.isfinite(p).all() for p in sess.trainer.model.parameters())


def test_rapid_repeated_clicks():
    at = fresh()
    for _ in range(5):
        at.button(key="play_play").click()
        at.button(key="play_step").click()
        at.button(key="play_reset").click()
        at.run()
        assert not at.exception
    for _ in range(6):
        at.button(key="play_step").click().run()
    assert not at.exception and step_metric(at) == "6"


def test_changing_experts_while_training_resets_and_keeps_training():
    at = fresh()
    at.button(key="play_play").click().run()
    sess = at.session_state["play"]
    assert sess.running and sess.step > 0
    next(s for s in at.slider if s.key == "ctl_n_experts").set_value(12).run()
    assert not at.exception
    assert sess.settings.n_experts == 12 and sess.running
    assert sess.trainer.n_experts == 12
    assert "was reset" in warnings_text(at)


def test_top_k_slider_follows_fewer_experts():
    at = fresh({"experts": "8", "top_k": "6"})
    next(s for s in at.slider if s.key == "ctl_n_experts").set_value(4).run()
    assert not at.exception
    sess = at.session_state["play"]
    assert sess.settings.n_experts == 4 and sess.settings.top_k <= 4
    next(s for s in at.slider if s.key == "ctl_n_experts").set_value(1).run()
    assert not at.exception and sess.settings.top_k == 1



def test_a_click_that_also_rides_on_a_live_tick_acts_once(monkeypatch):
    """Streamlit's frontend can send one click twice: with the live fragment's auto-rerun and with the full
    rerun (seen in a browser: a Pause that toggled twice and kept training). Callbacks act only outside
    fragment reruns, and Play/Pause sets the state its label shows."""
    import dataclasses
    from types import SimpleNamespace

    import streamlit.runtime.scriptrunner as scriptrunner
    from moe_ui import live
    from streamlit.runtime.scriptrunner_utils.script_run_context import ScriptRunContext

    assert "fragment_ids_this_run" in {f.name for f in dataclasses.fields(ScriptRunContext)}, \
        "Streamlit renamed the field that tells a fragment rerun apart"
    at = fresh()
    sess = at.session_state["play"]
    fragment_run = SimpleNamespace(fragment_ids_this_run=["tick"])
    monkeypatch.setattr(scriptrunner, "get_script_run_ctx", lambda suppress_warning=False: fragment_run)
    live._set_running(sess, True)
    live._step(sess)
    assert not sess.running and sess.step == 0, "in a fragment rerun the click does nothing ..."
    monkeypatch.setattr(scriptrunner, "get_script_run_ctx", lambda suppress_warning=False: None)
    live._set_running(sess, True)
    live._set_running(sess, True)
    assert sess.running, "... in the full rerun it acts; Play twice is still Play"
    live._step(sess)
    assert not sess.running and sess.step == 1
    monkeypatch.setattr(scriptrunner, "get_script_run_ctx", lambda suppress_warning=False: fragment_run)
    live._reset(sess)
    assert sess.step == 1
