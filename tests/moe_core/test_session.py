"""PlaygroundSession: ticks, live changes vs resets, the timeline, divergence, isolation."""

from __future__ import annotations

import numpy as np
import pytest

from moe_core.training.session import STEP_COST_TICKS, TIMELINE_MAX, PlaygroundSession
from moe_core.training.settings import PlaygroundSettings

SMALL = PlaygroundSettings(n_experts=4, top_k=2, batch_size=64, expert_hidden=16, steps_per_tick=5)


def test_tick_runs_at_most_steps_per_tick_and_snapshots():
    s = PlaygroundSession(SMALL)
    result = s.tick(budget_s=10.0)
    assert result.steps == 5 and s.step == 5
    assert s.latest.step == 5 and len(s.timeline) == 2  # step 0 and step 5


def test_tick_is_time_boxed():
    s = PlaygroundSession(PlaygroundSettings(**{**vars(SMALL), "steps_per_tick": 200}))
    result = s.tick(budget_s=0.0)
    assert result.steps == 1, "a zero budget still makes progress, one step at a time"


def test_live_change_keeps_the_run_and_shape_change_resets_with_a_notice():
    s = PlaygroundSession(SMALL)
    s.tick(10.0)
    notices = s.apply(PlaygroundSettings(**{**vars(SMALL), "capacity_factor": 1.0, "lr": 0.01}))
    assert notices == [] and s.step == 5
    s.tick(10.0)
    assert s.trainer.last_infos[0].capacity == 32  # ceil(1.0 * 2 * 64 / 4)
    notices = s.apply(PlaygroundSettings(**{**vars(SMALL), "n_experts": 8, "capacity_factor": 1.0, "lr": 0.01}))
    assert s.step == 0 and len(notices) == 1 and "experts" in notices[0] and "reset" in notices[0]


def test_same_settings_same_run_across_sessions():
    a, b = PlaygroundSession(SMALL), PlaygroundSession(SMALL)
    for _ in range(3):
        a.tick(10.0)
        b.tick(10.0)
    ha, hb = a.trainer.history.drop(columns="step_ms"), b.trainer.history.drop(columns="step_ms")
    assert ha.equals(hb)


def test_two_sessions_do_not_share_state():
    a = PlaygroundSession(SMALL)
    b = PlaygroundSession(PlaygroundSettings(**{**vars(SMALL), "n_experts": 8, "router": "hash"}))
    a.tick(10.0)
    assert b.step == 0 and b.trainer.model is not a.trainer.model
    assert a.latest.n_experts == 4 and b.latest.n_experts == 8


def test_timeline_is_bounded_and_scrubbable():
    s = PlaygroundSession(PlaygroundSettings(**{**vars(SMALL), "steps_per_tick": 1}))
    for _ in range(TIMELINE_MAX + 50):
        s.tick(10.0)
    assert len(s.timeline) <= s.timeline_limit(s.latest)
    steps = [snap.step for snap in s.timeline]
    assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == s.step
    middle = steps[len(steps) // 2]
    assert s.at_step(middle).step == middle
    assert s.at_step(middle + 0).grid_x is not None
    assert s.latest.layers[0].grid_probs.dtype == np.float16


def test_divergence_stops_the_session_with_a_reason():
    s = PlaygroundSession(PlaygroundSettings(**{**vars(SMALL), "lr": 100.0, "steps_per_tick": 50}))
    s.running = True
    import torch

    with torch.no_grad():
        s.trainer.model.head.weight.fill_(float("inf"))
    s.tick(10.0)
    assert s.status == "diverged" and not s.running
    assert "Training stopped" in s.status_line


def test_bad_live_change_leaves_everything_as_it_was():
    s = PlaygroundSession(SMALL)
    s.tick(10.0)
    before = s.settings
    with pytest.raises(ValueError):
        PlaygroundSettings(**{**vars(SMALL), "capacity_factor": -1.0})
    assert s.settings == before and s.step == 5


def test_a_live_tick_after_pause_trains_nothing():
    s = PlaygroundSession(SMALL)
    s.running = False  # the learner pressed Pause while this tick waited for a training slot
    assert s.tick(10.0, only_if_running=True).steps == 0 and s.step == 0
    s.running = True
    assert s.tick(10.0, only_if_running=True).steps == 5


def test_step_seconds_is_the_fastest_recent_tick_and_forgets_another_model(monkeypatch):
    s = PlaygroundSession(SMALL)
    assert s.step_seconds is None, "nothing measured before the first tick"
    per_step = []
    for _ in range(STEP_COST_TICKS + 3):
        r = s.tick(10.0)
        per_step.append(r.seconds / r.steps)
    assert s.step_seconds == min(per_step[-STEP_COST_TICKS:]), "the fastest of the last STEP_COST_TICKS ticks"
    assert s.tick(10.0, only_if_running=True).steps == 0 and s.step_seconds == min(per_step[-STEP_COST_TICKS:]), \
        "a tick that trained nothing measures nothing"
    s.apply(PlaygroundSettings(**{**vars(SMALL), "steps_per_tick": 7}))
    assert s.step_seconds is not None, "the speed control does not change what a step costs"
    s.apply(PlaygroundSettings(**{**vars(SMALL), "steps_per_tick": 7, "overflow_policy": "probability"}))
    assert s.step_seconds is None, "a change to the layer may change the code path: measured again"
    s.tick(10.0)
    assert s.step_seconds is not None
    s.apply(PlaygroundSettings(**{**vars(SMALL), "n_experts": 8}))
    assert s.step_seconds is None, "a rebuilt model is measured again"
    s.tick(10.0)
    s.reset()
    assert s.step_seconds is None


def _same_map(a, b) -> None:
    assert np.array_equal(a.grid_x, b.grid_x) and np.array_equal(a.grid_prediction, b.grid_prediction)
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert np.array_equal(la.grid_probs, lb.grid_probs) and np.array_equal(la.grid_top2, lb.grid_top2)


def test_training_ticks_leave_the_map_grid_out_between_two_timeline_snapshots():
    s = PlaygroundSession(SMALL)
    s.running = True
    s.map_grid_every_s = 3600.0  # the snapshot of step 0 keeps the grid fresh for an hour
    s.tick(10.0)
    s.tick(10.0)
    light = s.newest
    assert light.step == 10 and s.latest.step == 0, "the timeline keeps only snapshots with the grid"
    assert light.grid_x is None and all(layer.grid_probs is None for layer in light.layers)
    assert light.layers[0].tokens_per_expert.sum() > 0 and 0.0 <= light.test_quality <= 1.0, \
        "a snapshot without the grid still carries the headline's numbers and the other views' data"
    assert [snap.step for snap in s.timeline] == [0]
    s.map_grid_every_s = 0.0
    s.tick(10.0)
    assert s.newest is s.latest and s.latest.step == 15 and s.latest.grid_x is not None
    assert [snap.step for snap in s.timeline] == [0, 15]


def test_pausing_completes_the_newest_snapshot():
    s = PlaygroundSession(SMALL)
    s.running = True
    s.map_grid_every_s = 3600.0
    s.tick(10.0)
    s.tick(10.0)
    assert s.newest.grid_x is None
    s.running = False
    assert s.newest is s.latest and s.latest.step == 10
    _same_map(s.latest, _shrunk(s.trainer.snapshot()))  # the same step's grid: the weights did not move
    s.running = False
    assert [snap.step for snap in s.timeline] == [0, 10], "a second pause adds nothing"


def _shrunk(snap):
    for layer in snap.layers:
        layer.grid_probs = layer.grid_probs.astype(np.float16)
    return snap


def test_a_tick_that_stops_training_records_the_grid():
    s = PlaygroundSession(PlaygroundSettings(**{**vars(SMALL), "lr": 100.0, "steps_per_tick": 50}))
    s.running = True
    s.map_grid_every_s = 3600.0
    s.tick(10.0)
    assert s.newest.grid_x is None
    import torch

    with torch.no_grad():
        s.trainer.model.head.weight.fill_(float("inf"))
    s.tick(10.0)
    assert not s.running and s.newest is s.latest and s.latest.grid_x is not None, \
        "a diverged run is paused: its last snapshot is complete"


def test_step_and_reset_snapshots_carry_the_grid():
    s = PlaygroundSession(SMALL)
    s.map_grid_every_s = 3600.0
    s.step_once()
    assert s.newest is s.latest and s.latest.step == 1 and s.latest.grid_x is not None
    s.running = True
    s.tick(10.0)
    s.tick(10.0)
    s.reset()
    assert s.newest is s.latest and s.latest.step == 0 and s.latest.grid_x is not None


def test_a_language_session_has_no_grid_to_leave_out():
    s = PlaygroundSession(PlaygroundSettings(dataset="tokens", n_experts=4, top_k=1, batch_size=16,
                                             expert_hidden=16, steps_per_tick=2))
    s.running = True
    s.map_grid_every_s = 3600.0
    s.tick(10.0)
    s.tick(10.0)
    assert s.newest is s.latest and [snap.step for snap in s.timeline] == [0, 2, 4]
