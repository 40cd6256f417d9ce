"""Classroom server policy: which live tick runs when, and how much training each session gets.

A Streamlit server is one Python process: every session's ticks share one interpreter lock. These gates and
budgets keep a full class fair (first come, first served; the same training share for every student) and keep
clicks responsive. They are the app's business, not moe_core's: PlaygroundSession.tick only takes a slot and a
budget from its caller.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from moe_core.training.session import PlaygroundSession, TickResult


class FairSlots:
    """A counting semaphore that serves waiters first come, first served.

    threading.Semaphore is not fair: a thread that arrives while a slot is free takes it ahead of threads that
    have been waiting, and a woken waiter that loses that race queues again at the back. On a busy server that
    lets one session's back-to-back ticks starve another's. Here a released slot is handed to the oldest waiter.
    acquire(timeout) gives up after `timeout` seconds and then holds nothing."""

    def __init__(self, n: int):
        self.n = n
        self._lock = threading.Lock()
        self._free = n
        self._queue: deque[threading.Event] = deque()

    def acquire(self, timeout: float | None = None) -> bool:
        with self._lock:
            if self._free and not self._queue:
                self._free -= 1
                return True
            turn = threading.Event()
            self._queue.append(turn)
        if turn.wait(timeout):
            return True
        with self._lock:
            if turn.is_set():  # handed over between the timeout and here: it is ours
                return True
            self._queue.remove(turn)
            return False

    def release(self) -> None:
        with self._lock:
            if self._queue:
                self._queue.popleft().set()  # the slot passes straight to the oldest waiter
            elif self._free < self.n:
                self._free += 1
            else:
                raise ValueError("FairSlots released more often than acquired")

    def __enter__(self) -> FairSlots:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# Server-wide cap on training chunks running at the same time. A full classroom then slows down evenly
# instead of every session fighting for two cores at once. Not per-user state: set at import.
TRAINING_SLOTS = FairSlots(1)

# Fair share for live ticks (live_tick): per tick interval the server hands out TRAINING_SHARE_S seconds of
# training, split evenly over the sessions that trained in the last ACTIVE_WINDOW_S seconds, between
# MIN_TICK_BUDGET_S and the caller's budget (the app's TRAIN_BUDGET_S). A tick turns its share into a number of
# steps (fair_steps): the share divided by what one step of its model costs uninterrupted
# (PlaygroundSession.step_seconds). Counting in steps keeps a class even: a share counted in wall time lost the
# most steps to whichever sessions' ticks kept landing beside other students' page runs (15 students on one core:
# 13-14 steps/s for the unluckiest, 17-19 for the rest; in steps, within 2 steps/s of each other). Everyone's
# training slows down by the same factor and every page keeps redrawing. A tick that cannot get the training slot
# within SLOT_TIMEOUT_S skips training (the page still redraws) instead of queueing behind a heavy configuration,
# and a tick slowed down by the server stops at TICK_OVERRUN times its share of time. 0.50 s gives each of 15
# students on one process 33 ms of steps a tick; the rest of the tick interval draws the 15 pages. A larger share
# trades ticks for steps until the server runs out of CPU, and then loses both (30 students on two processes
# moving Speed, bench_classroom.py --replicas 2, slowest student: 0.45 s, 1.05-1.12 ticks/s and 13.7-16.1 steps/s;
# 0.50 s, 1.00-1.17 and 17.3-20.4; 0.55 s, 0.77-1.02 and 14-21 with p95 latency up to 1.75 s; benchmarks/README.md,
# "A class of 30").
TRAINING_SHARE_S = 0.50
MIN_TICK_BUDGET_S = 0.02
ACTIVE_WINDOW_S = 3.0
SLOT_TIMEOUT_S = 1.0
TICK_OVERRUN = 2.0

# Server-wide cap on live fragment reruns (a tick, a view's timer redraw, or a widget inside the live area) training
# and drawing at the same time, served in arrival order; live.py and pair.py take the slot. A learner's own action
# (a full run: a click, a slider) never waits for it. One at a time, because the server is one Python process:
# reruns side by side share one interpreter lock, and a training chunk (hundreds of small torch ops, each giving
# the lock up) then waits for it after every op while another rerun draws. Measured with ten students
# (benchmarks/bench_classroom.py, 30 s, wire students): two slots, 1.1 steps per 30 ms chunk; one slot, 2.8 steps,
# at the same 0.9-1.0 ticks/s per student; with 30 students on two processes, view redraws in the slot too raised
# training from ~11 to ~13 steps/s per student. A rerun waiting here uses no CPU.
TICK_SLOTS = FairSlots(1)


class _TrainingLoad:
    """Which sessions trained recently, server-wide. Keys expire on their own: nothing to release on disconnect."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[int, float] = {}

    def active(self, key: int) -> int:
        """Mark `key` as training now; return how many sessions trained within ACTIVE_WINDOW_S (itself included)."""
        with self._lock:
            self._seen[key] = time.monotonic()
            return self._count()

    def count(self) -> int:
        """How many sessions trained within ACTIVE_WINDOW_S."""
        with self._lock:
            return self._count()

    def _count(self) -> int:
        now = time.monotonic()
        for k in [k for k, t in self._seen.items() if now - t > ACTIVE_WINDOW_S]:
            del self._seen[k]
        return len(self._seen)


TRAINING_LOAD = _TrainingLoad()


# Chart redraws slow down as the class grows. Each redraw is a script run of its own (Streamlit's fixed cost per
# run plus the figure and its JSON), on the one core this process has. Up to QUIET_CLASS training sessions pages
# redraw at their own pace; above it, at pace level L = ceil(sessions / QUIET_CLASS) a page redraws its charts L
# times less often (live.refresh_periods). The headline still updates every tick, and the training share is unchanged.
QUIET_CLASS = 5


def pace_level(active: int | None = None) -> int:
    """1 while at most QUIET_CLASS sessions train in this process, 2 up to twice that, and so on."""
    n = TRAINING_LOAD.count() if active is None else active
    return max(1, math.ceil(n / QUIET_CLASS))


def fair_budget(budget_s: float, active: int) -> float:
    """One session's training time for a tick when `active` sessions are training."""
    return min(budget_s, max(MIN_TICK_BUDGET_S, TRAINING_SHARE_S / max(1, active)))


def fair_steps(budget_s: float, step_s: float | None, most: int) -> int:
    """A tick's share of training in steps: `budget_s` of this model's uninterrupted steps (`step_s` each), at
    least one and at most `most` (the learner's steps per tick). Without a measured step, `most`."""
    if not step_s or step_s <= 0:
        return most
    return max(1, min(most, round(budget_s / step_s)))


def live_tick(sess: PlaygroundSession, budget_s: float, steps: int) -> TickResult:
    """A timer tick's training: this session's fair share of the server's training time (fair_budget), counted in
    steps (fair_steps), in the TRAINING_SLOTS gate. The tick stops at TICK_OVERRUN times its share of time if the
    server slows those steps down, and at its share of time when no step of this model has been measured yet. A
    tick that waits more than SLOT_TIMEOUT_S for the gate trains nothing (the page still redraws) instead of
    queueing behind a heavy configuration. Paused while waiting: nothing trains."""
    budget_s = fair_budget(budget_s, TRAINING_LOAD.active(id(sess)))
    step_s = sess.step_seconds
    time_cap = budget_s if step_s is None else TICK_OVERRUN * budget_s
    return sess.tick(budget_s=time_cap, steps=fair_steps(budget_s, step_s, steps), only_if_running=True,
                     slot=TRAINING_SLOTS, slot_timeout=SLOT_TIMEOUT_S)
