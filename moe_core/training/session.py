"""PlaygroundSession: one learner's live run — settings, trainer, a bounded timeline, and a status line.

The Streamlit app keeps one of these per browser session (in st.session_state, never in a global cache)
and calls tick() from a run_every fragment. Nothing here knows about Streamlit, so the whole loop — apply a
control, reset when shapes change, time-box a chunk of steps, keep a timeline to scrub — is tested headless.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from moe_core.training.datasets import PointDataset
from moe_core.training.settings import CONTROL_BY_FIELD, PlaygroundSettings
from moe_core.training.snapshot import Snapshot
from moe_core.training.step_cost import slow_step_warning
from moe_core.training.trainer import Trainer

TIMELINE_BYTES = 8_000_000  # per session: the timeline keeps as many snapshots as fit in this budget
TIMELINE_MIN, TIMELINE_MAX = 10, 120

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

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def __enter__(self) -> FairSlots:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# Server-wide cap on training chunks running at the same time. A full classroom then slows down evenly
# instead of every session fighting for two cores at once. Not per-user state: set at import.
TRAINING_SLOTS = FairSlots(1)

# Fair share for live ticks (tick(fair=True)): per tick interval the server hands out TRAINING_SHARE_S seconds of
# training, split evenly over the sessions that trained in the last ACTIVE_WINDOW_S seconds, between
# MIN_TICK_BUDGET_S and the caller's budget (the app's TRAIN_BUDGET_S). Everyone's training slows down by the same
# factor and every page keeps redrawing. A tick that cannot get the training slot within SLOT_TIMEOUT_S skips
# training (the page still redraws) instead of queueing behind a heavy configuration. 0.3 s of each 0.75 s tick
# interval leaves most of the process's one core (one interpreter lock) for drawing: with ten students a share of
# 0.5 s gave 0.70 ticks/s each, 0.3 s gave 0.90 (bench_classroom.py; benchmarks/README.md, "Classroom load").
TRAINING_SHARE_S = 0.3
MIN_TICK_BUDGET_S = 0.02
ACTIVE_WINDOW_S = 3.0
SLOT_TIMEOUT_S = 1.0

# Server-wide cap on live ticks (fragment reruns: the run_every timer's, or a widget inside the live area) training
# and drawing at the same time, served in arrival order; app/moe_ui/live.py takes the slot. A learner's own action
# (a full run: a click, a slider) never waits for it. One at a time, because the server is one Python process:
# ticks running side by side share one interpreter lock, and a training chunk (hundreds of small torch ops, each
# giving the lock up) then waits for it after every op while another tick draws. Measured with ten students
# (benchmarks/bench_classroom.py, 30 s, wire students): two slots, 1.1 steps per 30 ms chunk; one slot, 2.8 steps,
# at the same 0.9-1.0 ticks/s per student. A tick waiting here uses no CPU.
TICK_SLOTS = FairSlots(1)


class _TrainingLoad:
    """Which sessions trained recently, server-wide. Keys expire on their own: nothing to release on disconnect."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[int, float] = {}

    def active(self, key: int) -> int:
        """Mark `key` as training now; return how many sessions trained within ACTIVE_WINDOW_S (itself included)."""
        now = time.monotonic()
        with self._lock:
            self._seen[key] = now
            for k in [k for k, t in self._seen.items() if now - t > ACTIVE_WINDOW_S]:
                del self._seen[k]
            return len(self._seen)


TRAINING_LOAD = _TrainingLoad()
_SESSION_KEYS = itertools.count()


def fair_budget(budget_s: float, active: int) -> float:
    """One session's training time for a tick when `active` sessions are training."""
    return min(budget_s, max(MIN_TICK_BUDGET_S, TRAINING_SHARE_S / max(1, active)))


@dataclass
class TickResult:
    steps: int  # optimizer steps run in this tick
    seconds: float  # wall time spent training (not waiting for a slot)
    waited: float  # seconds spent waiting for a training slot


class PlaygroundSession:
    def __init__(self, settings: PlaygroundSettings | None = None, dataset: PointDataset | None = None):
        self.settings = settings or PlaygroundSettings()
        self.custom_dataset = dataset  # a user's CSV, kept across resets until cleared
        self.running = False
        self.notices: list[str] = []  # things the UI should tell the learner once
        self._load_key = next(_SESSION_KEYS)  # this session in TRAINING_LOAD
        self._build()

    # -- lifecycle -------------------------------------------------------------------------------------
    def _build(self) -> None:
        model, data, train = self.settings.to_configs()
        dataset = self.custom_dataset if not self.settings.is_language else None
        self.trainer = Trainer(model, data, train, dataset=dataset)
        self.timeline: list[Snapshot] = []
        self.last_tick: TickResult | None = None
        self._record_snapshot()

    def reset(self) -> None:
        """Fresh weights from the same settings and seed (the same run again)."""
        self.running = False
        self._build()

    def set_dataset(self, dataset: PointDataset | None) -> None:
        self.custom_dataset = dataset
        self.notices.append("Using your uploaded points; the model was reset." if dataset is not None
                            else "Back to the generated data set; the model was reset.")
        self.reset()

    def apply(self, new: PlaygroundSettings) -> list[str]:
        """Move to new settings: live when nothing structural changed, else a reset. Returns notices."""
        notices: list[str] = []
        resets = new.resets_from(self.settings)
        if resets:
            labels = ", ".join(CONTROL_BY_FIELD[f].label.lower() for f in resets)
            self.settings = new
            was_running = self.running
            self._build()
            self.running = was_running
            notices.append(f"Changed {labels}: the model was reset and training starts again from step 0.")
            slow = slow_step_warning(new)
            if slow:
                notices.append(slow)
        else:
            live = new.live_changes_from(self.settings)
            trainer_changes = {k: v for k, v in live.items() if k != "steps_per_tick"}
            if trainer_changes:
                self.trainer.set_hyperparameters(**trainer_changes)  # validates before changing anything
            self.settings = new
        self.notices.extend(notices)
        return notices

    # -- training ----------------------------------------------------------------------------------------
    @property
    def step(self) -> int:
        return self.trainer.step_count

    @property
    def status(self) -> str:
        if self.trainer.diverged:
            return "diverged"
        return "training" if self.running else "paused"

    @property
    def status_line(self) -> str:
        if self.trainer.diverged:
            return self.trainer.diverged
        if self.running:
            rate = ""
            if self.last_tick and self.last_tick.seconds > 0:
                rate = f" at {self.last_tick.steps / self.last_tick.seconds:.0f} steps/s"
            return f"Training: step {self.step}{rate}."
        return f"Paused at step {self.step}."

    def tick(self, budget_s: float = 0.2, steps: int | None = None, only_if_running: bool = False,
             fair: bool = False) -> TickResult:
        """Run up to `steps` (default: steps_per_tick) optimizer steps within `budget_s`, then snapshot.

        only_if_running: a live tick that was waiting for a training slot while the learner pressed Pause
        trains nothing (paused means paused, however busy the server is).
        fair: a live tick — the budget shrinks to this session's fair share of the server's training time
        (fair_budget), and a tick that waits more than SLOT_TIMEOUT_S for the training slot trains nothing."""
        steps = self.settings.steps_per_tick if steps is None else steps
        if fair:
            budget_s = fair_budget(budget_s, TRAINING_LOAD.active(self._load_key))
        t0 = time.perf_counter()
        if not TRAINING_SLOTS.acquire(timeout=SLOT_TIMEOUT_S if fair else None):
            self.last_tick = TickResult(steps=0, seconds=0.0, waited=time.perf_counter() - t0)
            return self.last_tick
        try:
            waited = time.perf_counter() - t0
            if only_if_running and not self.running:
                steps = 0
            t1 = time.perf_counter()
            records = self.trainer.run_for(budget_s, max_steps=steps) if steps > 0 else []
            trained = time.perf_counter() - t1
            if records or not self.timeline:
                self._record_snapshot()
        finally:
            TRAINING_SLOTS.release()
        if self.trainer.diverged:
            self.running = False
        self.last_tick = TickResult(steps=len(records), seconds=trained, waited=waited)
        return self.last_tick

    def step_once(self) -> TickResult:
        return self.tick(budget_s=0.0, steps=1)

    # -- timeline ------------------------------------------------------------------------------------------
    def _record_snapshot(self) -> None:
        snap = self.trainer.snapshot()
        _shrink(snap)
        self.timeline.append(snap)
        limit = self.timeline_limit(snap)
        if len(self.timeline) > limit:  # thin the older half, always keep the first and the newest
            half = len(self.timeline) // 2
            self.timeline = self.timeline[:half][::2] + self.timeline[half:]

    @staticmethod
    def timeline_limit(snap: Snapshot) -> int:
        size = sum(v.nbytes for layer in snap.layers for v in vars(layer).values() if isinstance(v, np.ndarray))
        return int(min(TIMELINE_MAX, max(TIMELINE_MIN, TIMELINE_BYTES // max(1, size))))

    @property
    def latest(self) -> Snapshot:
        return self.timeline[-1]

    def at_step(self, step: int) -> Snapshot:
        """The newest snapshot taken at or before `step` (the timeline slider)."""
        best = self.timeline[0]
        for snap in self.timeline:
            if snap.step <= step:
                best = snap
        return best


def _shrink(snap: Snapshot) -> None:
    """Keep grids in float16: plenty for colours, half the memory of a long timeline."""
    for layer in snap.layers:
        if layer.grid_probs is not None:
            layer.grid_probs = layer.grid_probs.astype(np.float16)
