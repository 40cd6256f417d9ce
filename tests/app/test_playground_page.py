"""AppTest: the Playground page's wiring — controls, transport buttons, URL parameters, views."""

from __future__ import annotations

import json

import pytest
from apptools import fresh, metric, warnings_text
from streamlit.testing.v1 import AppTest

from moe_core.layer.config import ROUTER_CATALOGUE
from moe_core.training.datasets import DATASETS
from moe_core.training.settings import CONTROL_BY_FIELD, CONTROLS, PlaygroundSettings


def session(at: AppTest):
    return at.session_state["play"]


def chart_specs(at: AppTest) -> list[str]:
    return [el.proto.spec for el in at.get("plotly_chart")]


def test_playground_loads_with_its_default_views():
    at = fresh()
    assert metric(at, "Step") == "0"
    assert len(at.get("plotly_chart")) == 4  # routing map, load, buffers, curves
    assert session(at).settings == PlaygroundSettings()


def test_step_advances_the_counter_and_changes_every_view():
    at = fresh()
    before = chart_specs(at)
    at.button(key="play_step").click().run()
    assert not at.exception
    assert metric(at, "Step") == "1"
    after = chart_specs(at)
    assert len(after) == len(before)
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        assert a != b, f"view {i} did not change after a training step"


def test_play_ticks_and_pause_stops():
    at = fresh()
    at.button(key="play_play").click().run()
    sess = session(at)
    assert sess.running
    first = sess.step
    assert first >= 1, "pressing Play runs a tick at once"
    at.run()  # AppTest runs the fragment once per run: one more tick
    assert sess.step > first
    at.button(key="play_play").click().run()
    assert not sess.running
    paused_at = sess.step
    at.run()
    assert sess.step == paused_at


def test_reset_goes_back_to_step_zero():
    at = fresh()
    at.button(key="play_step").click().run()
    at.button(key="play_reset").click().run()
    assert session(at).step == 0 and metric(at, "Step") == "0"


# (widget key, value to set, settings field, expected value, resets?)
CONTROL_CASES = [
    ("ctl_dataset", "moons", "dataset", "moons", True),
    ("ctl_noise", 0.3, "noise", 0.3, True),
    ("ctl_n_classes", 4, "n_classes", 4, True),
    ("ctl_seed", 7, "seed", 7, True),
    ("ctl_router", "noisy_topk", "router", "noisy_topk", True),
    ("ctl_n_experts", 16, "n_experts", 16, True),
    ("ctl_top_k", 3, "top_k", 3, True),
    ("ctl_overflow_policy", "probability", "overflow_policy", "probability", False),
    ("ctl_aux_loss_coef", 0.1, "aux_loss_coef", 0.1, False),
    ("ctl_z_loss_coef", 0.001, "z_loss_coef", 0.001, False),
    ("ctl_router_noise", 0.2, "router_noise", 0.2, False),
    ("ctl_normalize_topk", False, "normalize_topk", False, False),
    ("ctl_n_shared_experts", 1, "n_shared_experts", 1, True),
    ("ctl_expert_hidden", 32, "expert_hidden", 32, True),
    ("ctl_n_layers", 2, "n_layers", 2, True),
    ("ctl_lr", 0.01, "lr", 0.01, False),
    ("ctl_batch_size", 128, "batch_size", 128, True),
    ("ctl_steps_per_tick", 50, "steps_per_tick", 50, False),
]


@pytest.mark.parametrize("key, value, field, expected, resets", CONTROL_CASES, ids=[c[0] for c in CONTROL_CASES])
def test_every_control_changes_the_state_it_should(key, value, field, expected, resets):
    at = fresh({"capacity": "1.25"} if field == "overflow_policy" else None)  # shown when capacity is limited
    at.button(key="play_step").click().run()
    _widget(at, key).set_value(value).run()
    assert not at.exception, [e.message for e in at.exception]
    sess = session(at)
    assert getattr(sess.settings, field) == expected
    if resets:
        assert sess.step == 0, f"{field} changes the model: it resets"
        assert "was reset" in warnings_text(at)
    else:
        assert sess.step == 1, f"{field} applies live, without a reset"
        if field in ("capacity_factor", "aux_loss_coef", "overflow_policy", "router_noise", "z_loss_coef"):
            assert getattr(sess.trainer.model_config.moe, field) == expected


def _widget(at: AppTest, key: str):
    for kind in ("selectbox", "slider", "select_slider", "number_input", "toggle", "radio"):
        for w in getattr(at, kind):
            if w.key == key:
                return w
    raise AssertionError(f"no widget with key {key}")


def test_capacity_toggle_and_slider():
    at = fresh()
    _widget(at, "ctl_limit_capacity").set_value(True).run()
    assert session(at).settings.capacity_factor == 1.25
    _widget(at, "ctl_capacity_factor").set_value(0.5).run()
    assert session(at).settings.capacity_factor == 0.5
    at.button(key="play_step").click().run()
    assert session(at).trainer.last_infos[0].capacity == 32  # ceil(0.5 * 2 * 256 / 8)


def test_url_parameters_seed_the_state():
    at = fresh({"experts": "16", "top_k": "4", "capacity": "1.5", "router": "sigmoid_bias", "seed": "3"})
    s = session(at).settings
    assert (s.n_experts, s.top_k, s.capacity_factor, s.router, s.seed) == (16, 4, 1.5, "sigmoid_bias", 3)
    assert not at.warning
    assert _widget(at, "ctl_n_experts").value == 16


@pytest.mark.parametrize("query, fragment", [
    ({"experts": "999"}, "experts='999': out of range"),
    ({"experts": "abc"}, "not a number"),
    ({"top_k": "-1"}, "top_k='-1'"),
    ({"capacity": "nan"}, "not a finite number"),
    ({"lr": "inf"}, "not a finite number"),
    ({"router": "<script>"}, "not one of"),
    ({"seed": "1" * 500}, "out of range"),
    ({"experts": "4", "top_k": "8"}, "more than the 4 experts"),
])
def test_garbage_url_parameters_warn_and_fall_back(query, fragment):
    at = fresh(query)
    warnings = warnings_text(at)
    assert fragment in warnings, warnings
    assert metric(at, "Step") == "0"
    at.button(key="play_step").click().run()
    assert not at.exception and metric(at, "Step") == "1", "the session keeps working"


def test_hide_and_present_parameters():
    at = fresh({"hide": "router,experts", "present": "1"})
    keys = {w.key for kind in ("selectbox", "slider") for w in getattr(at, kind)}
    assert "ctl_router" not in keys and "ctl_n_experts" not in keys
    assert "ctl_dataset" in keys


def test_views_can_be_chosen_and_options_change_figures():
    at = fresh()
    views = next(m for m in at.multiselect if m.key == "play_views")
    views.set_value(["routing_map", "probabilities", "specialization", "cost"]).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) >= 4
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "data" in spec


def test_language_mode_shows_characters_by_expert():
    at = fresh({"dataset": "tokens"})
    assert session(at).settings.is_language
    views = next(m for m in at.multiselect if m.key == "play_views")
    views.set_value(["language", "specialization"]).run()
    assert not at.exception
    assert any("<span" in m.value for m in at.markdown)


def test_repeated_steps_show_the_newest_step_and_the_timeline_scrubs_back():
    at = fresh()
    for n in range(1, 4):
        at.button(key="play_step").click().run()
        assert metric(at, "Step") == str(n)
    timeline = next(s for s in at.select_slider if s.key == "play_timeline")
    timeline.set_value(1).run()
    assert metric(at, "Step") == "1", "the views replay the chosen step"
    at.button(key="play_step").click().run()
    assert metric(at, "Step") == "4", "training while scrubbed back shows the newest step"
    timeline = next(s for s in at.select_slider if s.key == "play_timeline")
    timeline.set_value(4).run()
    assert metric(at, "Step") == "4"


def test_widget_ranges_and_labels_come_from_controls():
    """Sliders span their control's range and step, select-sliders offer its marks, labels are its label, and the
    Router box shows the router catalogue's labels (moe_core/layer/config.py)."""
    at = fresh({"router": "sigmoid_bias", "capacity": "1.25"})  # sigmoid_bias: the bias-rate control is shown
    by_label = {c.label: c for c in CONTROLS}
    by_label["Arms"] = CONTROL_BY_FIELD["n_classes"]  # the spirals' name for classes
    arms_low = DATASETS["spirals"].n_classes_range[0]
    narrowed = {"Arms": (arms_low, 8), "Top-k": (1, 8)}  # the data set's arm range; k <= the 8 experts
    sliders = [s for s in at.slider if s.label in by_label]
    assert {s.label for s in sliders} >= {"Noise", "Arms", "Experts", "Top-k", "Capacity factor", "Router noise",
                                          "Shared experts", "Layers", "Speed (steps per tick)"}
    for s in sliders:
        c = by_label[s.label]
        assert (s.min, s.max) == narrowed.get(s.label, (c.low, c.high)), s.label
        if c.step is not None:
            assert s.step == pytest.approx(c.step), s.label
    marks = [s for s in at.select_slider if s.label in by_label]
    assert {s.label for s in marks} == {"Balancing loss", "Router z-loss", "Bias update rate", "Expert width",
                                        "Learning rate", "Batch size"}
    for s in marks:
        c = by_label[s.label]
        assert len(s.options) == len(c.marks), s.label
    router_box = next(s for s in at.selectbox if s.label == CONTROL_BY_FIELD["router"].label)
    assert router_box.options == [r.label for r in ROUTER_CATALOGUE]


def test_every_curve_on_log_scale_keeps_the_uniform_entropy_line_at_ln_e():
    """The learner's path the walker took: train, pick every curve, turn on Log scale. The entropy panels' ln E
    label must sit at ln E (log10 of it on a log axis), not stretch the axis to hundreds."""
    import math

    from moe_core.figures import METRIC_LABELS

    at = fresh()
    for _ in range(3):
        at.button(key="play_step").click().run()
    curves = next(m for m in at.multiselect if m.key == "play_curves")
    curves.set_value([m for m in METRIC_LABELS if m != "mse"]).run()  # every curve a classifier records
    next(t for t in at.toggle if t.key == "play_logy").set_value(True).run()
    assert not at.exception, [e.message for e in at.exception]
    spec = next(s for s in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
                if s["layout"]["title"]["text"] == "Training curves")
    log_axes = [k for k, v in spec["layout"].items() if k.startswith("yaxis") and v.get("type") == "log"]
    assert log_axes, "Log scale gives log axes"
    labels = [a for a in spec["layout"]["annotations"] if "(uniform)" in a["text"]]
    assert labels, "the entropy panels keep their ln E line"
    for a in labels:
        assert a["y"] == pytest.approx(math.log10(math.log(8))), a
