"""The Playground's Router precision control: shown for the routers that support bfloat16, bound to the URL."""

from __future__ import annotations

from apptools import fresh


def radio(at, label):
    return next(r for r in at.radio if r.label == label)


def test_router_precision_is_a_control_and_goes_to_the_url():
    at = fresh()
    control = radio(at, "Router precision")
    assert control.value == "float32"
    control.set_value("bfloat16").run()
    assert not at.exception
    assert at.query_params.get("router_dtype") in ("bfloat16", ["bfloat16"])
    at.button(key="play_step").click().run()
    assert not at.exception
    assert at.session_state["play"].settings.router_dtype == "bfloat16"


def test_router_precision_is_not_offered_where_the_router_has_none():
    at = fresh()
    at.selectbox(key="ctl_router").set_value("expert_choice").run()
    assert not at.exception
    assert all(r.label != "Router precision" for r in at.radio)
