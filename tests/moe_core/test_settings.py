"""PlaygroundSettings: URL parsing never raises, warns specifically, and round-trips exactly."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_core.layer.config import LIVE_FIELDS, ROUTERS, MoEConfig
from moe_core.training.settings import CONTROL_BY_URL, CONTROLS, PACE_FIELDS, PlaygroundSettings
from moe_core.training.trainer import TRAIN_LIVE_FIELDS, TrainConfig, Trainer


def test_defaults_make_an_empty_url():
    assert PlaygroundSettings().to_query_params() == {}


def test_good_url_values_are_used():
    s, warnings = PlaygroundSettings.from_query_params(
        {"experts": "16", "top_k": "4", "capacity": "1.25", "router": "noisy_topk", "lr": "0.01", "normalize": "0"}
    )
    assert warnings == []
    assert (s.n_experts, s.top_k, s.capacity_factor, s.router, s.lr, s.normalize_topk) == (
        16, 4, 1.25, "noisy_topk", 0.01, False)


@pytest.mark.parametrize(
    "params, fragment",
    [
        ({"experts": "abc"}, "not a number"),
        ({"experts": "2.5"}, "not a whole number"),
        ({"experts": "1e9"}, "out of range"),
        ({"experts": "-3"}, "out of range"),
        ({"capacity": "nan"}, "not a finite number"),
        ({"capacity": "inf"}, "not a finite number"),
        ({"capacity": "0"}, "out of range"),
        ({"router": "magic"}, "not one of"),
        ({"dataset": "../../etc/passwd"}, "not one of"),
        ({"normalize": "maybe"}, "not true or false"),
        ({"lr": "100000"}, "out of range"),
        ({"whatever": "1"}, "Unknown URL parameter"),
    ],
)
def test_bad_url_values_warn_specifically_and_fall_back(params, fragment):
    s, warnings = PlaygroundSettings.from_query_params(params)
    assert len(warnings) == 1 and fragment in warnings[0]
    key = next(iter(params))
    if key in CONTROL_BY_URL:
        field = CONTROL_BY_URL[key].field
        assert getattr(s, field) == getattr(PlaygroundSettings(), field), "falls back to the default"
        assert key in warnings[0]


def test_impossible_combinations_are_fixed_with_a_note():
    s, warnings = PlaygroundSettings.from_query_params({"experts": "4", "top_k": "8"})
    assert s.n_experts == 4 and s.top_k <= 4
    assert any("more than the 4 experts" in w for w in warnings)
    s, warnings = PlaygroundSettings.from_query_params({"router": "switch", "top_k": "3"})
    assert s.top_k == 1 and any("exactly one expert" in w for w in warnings)
    s, warnings = PlaygroundSettings.from_query_params({"dataset": "tokens", "router": "soft"})
    assert s.router == "softmax_topk" and any("non-causal" in w for w in warnings)


def test_huge_and_repeated_values_do_not_crash():
    s, warnings = PlaygroundSettings.from_query_params({"seed": "9" * 10_000, "experts": ["4", "8"]})
    assert s.n_experts == 8  # the last of repeated values
    assert warnings and len(warnings[0]) < 300, "a huge value is shortened in the message"


def test_shape_and_live_fields():
    a = PlaygroundSettings()
    b = PlaygroundSettings(n_experts=16, aux_loss_coef=0.1, capacity_factor=1.0)
    assert b.resets_from(a) == ["n_experts"]
    assert b.live_changes_from(a) == {"capacity_factor": 1.0, "aux_loss_coef": 0.1}


def test_to_configs_language_uses_windows():
    model, data, train = PlaygroundSettings(dataset="tokens", batch_size=256).to_configs()
    assert data.dataset == "tokens" and train.batch_size == 4 and model.context == 64


url_values = st.one_of(st.text(max_size=30), st.sampled_from(["nan", "inf", "-inf", "1e400", "none", "", "0", "-1",
                                                                "1.0", "64", "65", "true", "spirals", "switch"]))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([c.url for c in CONTROLS] + ["junk", "present", "hide"]), url_values,
                       max_size=8))
def test_fuzz_url_parsing_never_raises_and_gives_valid_settings(params):
    s, warnings = PlaygroundSettings.from_query_params(params)
    assert isinstance(s, PlaygroundSettings)
    assert s.top_k <= s.n_experts
    assert all(isinstance(w, str) for w in warnings)
    again, more = PlaygroundSettings.from_query_params(s.to_query_params())
    assert again == s and more == []


@settings(max_examples=200, deadline=None)
@given(st.builds(
    PlaygroundSettings,
    n_experts=st.integers(8, 64), top_k=st.integers(1, 8),
    capacity_factor=st.one_of(st.none(), st.floats(0.25, 4.0)),
    lr=st.floats(1e-5, 100.0), noise=st.floats(0, 1), aux_loss_coef=st.floats(0, 1),
    seed=st.integers(0, 999_999),
))
def test_round_trip_is_exact(s):
    again, warnings = PlaygroundSettings.from_query_params(s.to_query_params())
    assert warnings == [] and again == s
    assert math.isfinite(again.lr)


def _another_value(c, base):
    """A valid value of control `c` other than its value in `base` (and compatible with base's other values)."""
    current = getattr(base, c.field)
    if c.kind == "bool":
        return not current
    if c.kind == "choice":
        return next(v for v in c.choices if v != current and v not in ("expert_choice", "soft"))
    if c.marks:
        return next(v for v in c.marks if v != current)
    if c.kind == "optional_float":
        return 1.0
    return next(v for v in (c.low, c.low + 1, c.high) if v != current)


@pytest.mark.parametrize("c", CONTROLS, ids=lambda c: c.field)
def test_every_controls_reset_rule_is_what_the_trainer_and_layer_accept(c):
    """Control.resets is derived from LIVE_FIELDS and TRAIN_LIVE_FIELDS: check it against a real trainer, and that
    each live settings field sets the config field of the same name."""
    assert c.resets == (c.field not in LIVE_FIELDS | TRAIN_LIVE_FIELDS | PACE_FIELDS)
    base = PlaygroundSettings(batch_size=16, expert_hidden=4, n_experts=2, top_k=1)
    changed = PlaygroundSettings(**{**vars(base), c.field: _another_value(c, base)})
    assert changed.resets_from(base) == ([c.field] if c.resets else [])
    if c.field in PACE_FIELDS:
        return
    trainer = Trainer(*base.to_configs())
    if c.resets:
        if c.field in {f.name for f in fields(MoEConfig)} | {f.name for f in fields(TrainConfig)}:
            with pytest.raises(ValueError, match="cannot change during training"):
                trainer.set_hyperparameters(**{c.field: getattr(changed, c.field)})
        return
    trainer.set_hyperparameters(**{c.field: getattr(changed, c.field)})
    model, _, train = changed.to_configs()
    config = train if c.field in TRAIN_LIVE_FIELDS else model.moe
    assert getattr(config, c.field) == getattr(changed, c.field)
    assert getattr(trainer.model_config.moe if config is model.moe else trainer.train_config, c.field) == \
        getattr(changed, c.field)


@pytest.mark.parametrize("router", ROUTERS)
def test_coerce_follows_moeconfig_rules_for_every_router_experts_and_k(router):
    """The k/E rules live in MoEConfig (moe_core.layer.config); coerce fixes any combination into one it accepts,
    and leaves alone every combination it accepts."""
    for n_experts in (1, 2, 3, 4):
        for top_k in (1, 2, 3, 4):
            values = {**vars(PlaygroundSettings()), "router": router, "n_experts": n_experts, "top_k": top_k}
            settings, notes = PlaygroundSettings.coerce(values)
            settings.to_configs()  # MoEConfig accepts it
            try:
                MoEConfig(router=router, n_experts=n_experts, top_k=top_k)
            except ValueError:
                assert notes, f"{router}, E={n_experts}, k={top_k} was changed without a note"
            else:
                assert (settings.n_experts, settings.top_k) == (n_experts, top_k) and not notes


def test_widget_marks_lie_in_their_controls_range():
    for c in CONTROLS:
        assert all(c.low <= m <= c.high for m in c.marks), c.field
        assert c.step is None or c.kind in ("float", "optional_float"), c.field
