"""The server-side guards a classroom relies on (app/moe_ui/scheduling.py): first-come-first-served slots, a fair
training budget per tick, and a live tick that gives up on a busy training slot instead of queueing. No timing
thresholds: the behaviour is checked through order, counts and the budgets handed to the trainer (the timings are in
benchmarks/bench_classroom.py)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from moe_core.training.session import PlaygroundSession
from moe_core.training.settings import PlaygroundSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "app"))
from moe_ui import scheduling as session_module  # noqa: E402  (the classroom policy lives in the app)
from moe_ui.scheduling import FairSlots, fair_budget, fair_steps  # noqa: E402

SMALL = PlaygroundSettings(n_experts=4, top_k=2, batch_size=64, expert_hidden=16, steps_per_tick=5)


def wait_until(cond, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.001)


def test_slots_serve_waiters_in_arrival_order_and_nobody_jumps_the_queue():
    slots = FairSlots(1)
    assert slots.acquire()
    order: list[int] = []

    def worker(i: int) -> None:
        with slots:
            order.append(i)

    threads = []
    for i in range(5):
        t = threading.Thread(target=worker, args=(i,))
        t.start()
        wait_until(lambda n=i + 1: len(slots._queue) == n, f"waiter {i} queued")
        threads.append(t)
    slots.release()  # handed to waiter 0, not put back in the pool ...
    assert not slots.acquire(timeout=0), "... so a newcomer cannot take it ahead of the queue"
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2, 3, 4]
    assert slots.acquire(timeout=0), "free again once the queue is empty"
    slots.release()


def test_a_timed_out_waiter_holds_nothing_and_leaves_the_queue():
    slots = FairSlots(2)
    assert slots.acquire() and slots.acquire()
    assert not slots.acquire(timeout=0.01)
    assert not slots._queue
    slots.release()
    slots.release()
    assert slots.acquire(timeout=0) and slots.acquire(timeout=0)  # both slots back, none leaked
    slots.release()
    slots.release()
    with pytest.raises(ValueError):
        slots.release()


def test_fair_budget_splits_the_share_and_stays_within_bounds():
    share, floor = session_module.TRAINING_SHARE_S, session_module.MIN_TICK_BUDGET_S
    assert fair_budget(0.1, 1) == min(0.1, share)
    assert fair_budget(1.0, 4) == pytest.approx(share / 4)
    assert fair_budget(1.0, 10_000) == floor, "a crowded server still trains a little per tick"
    assert fair_budget(0.001, 1) == 0.001, "never more than the caller asked for"
    budgets = [fair_budget(1.0, n) for n in range(1, 40)]
    assert budgets == sorted(budgets, reverse=True), "more students, never a bigger share"


def test_recently_training_sessions_count_and_idle_ones_expire(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(session_module.time, "monotonic", lambda: clock[0])
    load = session_module._TrainingLoad()
    assert [load.active(k) for k in range(3)] == [1, 2, 3]
    assert load.active(0) == 3, "the same session counts once"
    clock[0] += session_module.ACTIVE_WINDOW_S + 0.5
    assert load.active(1) == 1, "sessions that stopped ticking (paused, closed) drop out by themselves"


def test_fair_steps_turn_a_time_share_into_steps_within_bounds():
    assert fair_steps(0.03, None, 20) == 20, "no step measured yet: the learner's steps per tick (time caps it)"
    assert fair_steps(0.03, 0.002, 20) == 15
    assert fair_steps(0.03, 0.0001, 20) == 20, "never more than the learner's steps per tick"
    assert fair_steps(0.03, 1.0, 20) == 1, "a heavy model still makes progress, one step a tick"
    steps = [fair_steps(fair_budget(1.0, n), 0.002, 50) for n in range(1, 40)]
    assert steps == sorted(steps, reverse=True), "more students, never more steps"


def test_a_live_tick_trains_its_fair_share_in_steps(monkeypatch):
    s = PlaygroundSession(SMALL)
    s.running = True
    calls: list[tuple[float, int]] = []
    real = s.trainer.run_for

    def spy(budget_s, max_steps=None):
        calls.append((budget_s, max_steps))
        return real(budget_s, max_steps=max_steps)

    monkeypatch.setattr(s.trainer, "run_for", spy)
    monkeypatch.setattr(session_module, "TRAINING_LOAD", session_module._TrainingLoad())
    others = [PlaygroundSession(SMALL) for _ in range(9)]
    for o in others:  # nine other students trained a moment ago
        session_module.TRAINING_LOAD.active(id(o))
    share = fair_budget(10.0, 10)
    session_module.live_tick(s, 10.0, 200)  # this model's first tick: its share of time, and a step measured
    measured = s.step_seconds
    session_module.live_tick(s, 10.0, 200)  # then its share in steps, with room for a slowed-down server
    s.tick(budget_s=10.0)  # not a live tick: the caller's budget as given
    assert calls == [(pytest.approx(share), 200),
                     (pytest.approx(session_module.TICK_OVERRUN * share), fair_steps(share, measured, 200)),
                     (10.0, SMALL.steps_per_tick)]


def test_a_live_tick_that_cannot_get_the_training_slot_skips_training_but_keeps_the_model(monkeypatch):
    monkeypatch.setattr(session_module, "SLOT_TIMEOUT_S", 0.01)
    s = PlaygroundSession(SMALL)
    s.running = True
    assert session_module.TRAINING_SLOTS.acquire()  # someone else's long chunk
    try:
        result = session_module.live_tick(s, 10.0, s.settings.steps_per_tick)
    finally:
        session_module.TRAINING_SLOTS.release()
    assert result.steps == 0 and s.step == 0 and s.running and len(s.timeline) == 1
    assert session_module.live_tick(s, 10.0, s.settings.steps_per_tick).steps == 5, "the next tick trains"


def test_counting_the_class_marks_nobody(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(session_module.time, "monotonic", lambda: clock[0])
    load = session_module._TrainingLoad()
    assert load.count() == 0
    load.active(1)
    load.active(2)
    assert load.count() == 2 and load.count() == 2, "reading the size does not add a session"
    clock[0] += session_module.ACTIVE_WINDOW_S + 0.5
    assert load.count() == 0, "stale sessions expire on a read too"


def test_the_pace_level_rises_by_one_per_quiet_class():
    quiet = session_module.QUIET_CLASS
    assert [session_module.pace_level(n) for n in (0, 1, quiet)] == [1, 1, 1]
    assert session_module.pace_level(quiet + 1) == 2
    assert session_module.pace_level(2 * quiet) == 2
    assert session_module.pace_level(3 * quiet) == 3
    levels = [session_module.pace_level(n) for n in range(0, 60)]
    assert levels == sorted(levels), "a bigger class never redraws faster"


def test_the_pace_level_reads_the_server_load(monkeypatch):
    monkeypatch.setattr(session_module, "TRAINING_LOAD", session_module._TrainingLoad())
    assert session_module.pace_level() == 1
    for k in range(2 * session_module.QUIET_CLASS + 1):
        session_module.TRAINING_LOAD.active(k)
    assert session_module.pace_level() == 3
