"""PlaygroundSession: one learner's live run — settings, trainer, a bounded timeline, and a status line.

The Streamlit app keeps one of these per browser session (in st.session_state, never in a global cache)
and calls tick() from a run_every fragment. Nothing here knows about Streamlit, so the whole loop — apply a
control, reset when shapes change, time-box a chunk of steps, keep a timeline to scrub — is tested headless.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from moe_core.training.datasets import PointDataset
from moe_core.training.settings import CONTROL_BY_FIELD, PlaygroundSettings
from moe_core.training.snapshot import Snapshot
from moe_core.training.step_cost import slow_step_warning
from moe_core.training.trainer import Trainer

TIMELINE_BYTES = 8_000_000  # per session: the timeline keeps as many snapshots as fit in this budget
TIMELINE_MIN, TIMELINE_MAX = 10, 120
STEP_COST_TICKS = 10  # step_seconds: the fastest of this many recent ticks
# While training, a tick's snapshot carries the routing map's grid (take_snapshot: about three quarters of a 2-D
# snapshot's cost) at most this often; the ticks between record a snapshot without it for the headline and the other
# views. A live routing map redraws every few seconds anyway, and always from the newest snapshot with the grid.
MAP_GRID_EVERY_S = 2.0


class Slot(Protocol):
    """A server's gate for training chunks (the app's scheduling.FairSlots): acquire(timeout) -> held or not."""

    def acquire(self, timeout: float | None = None) -> bool: ...

    def release(self) -> None: ...


@dataclass
class TickResult:
    steps: int  # optimizer steps run in this tick
    seconds: float  # wall time spent training (not waiting for a slot)
    waited: float  # seconds spent waiting for a training slot


class PlaygroundSession:
    def __init__(self, settings: PlaygroundSettings | None = None, dataset: PointDataset | None = None):
        self.settings = settings or PlaygroundSettings()
        self.custom_dataset = dataset  # a user's CSV, kept across resets until cleared
        self.map_grid_every_s = MAP_GRID_EVERY_S
        self._running = False
        self.notices: list[str] = []  # things the UI should tell the learner once
        self._build()

    # -- lifecycle -------------------------------------------------------------------------------------
    def _build(self) -> None:
        model, data, train = self.settings.to_configs()
        dataset = self.custom_dataset if not self.settings.is_language else None
        self.trainer = Trainer(model, data, train, dataset=dataset)
        self.timeline: list[Snapshot] = []  # complete snapshots (with the map's grid): what the slider scrubs
        self._newest: Snapshot | None = None  # a newer snapshot without the grid, taken by a training tick
        self._grid_at = 0.0  # time.monotonic() of the last snapshot with the grid
        self.last_tick: TickResult | None = None
        self._step_seconds: deque[float] = deque(maxlen=STEP_COST_TICKS)
        self._record_snapshot()

    def reset(self) -> None:
        """Fresh weights from the same settings and seed (the same run again)."""
        self._build()
        self.running = False

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
                self._step_seconds.clear()  # e.g. another overflow policy may run another code path: measure again
            self.settings = new
        self.notices.extend(notices)
        return notices

    # -- training ----------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        """Training on (Play). Setting it False (a pause) completes the newest snapshot: paused, every view and the
        timeline show the same step."""
        return self._running

    @running.setter
    def running(self, value: bool) -> None:
        self._running = value
        if not value and self._newest is not None:
            self._record_snapshot(grid=True)  # the weights have not moved since: the same step, now with the grid

    @property
    def step(self) -> int:
        return self.trainer.step_count

    @property
    def step_seconds(self) -> float | None:
        """What one optimizer step of this model costs when nothing interrupts it: the fastest per-step time of
        the last STEP_COST_TICKS ticks that trained (a tick's own average also counts the moments a busy server
        gave its interpreter lock to someone else). None until a tick has trained this model."""
        return min(self._step_seconds) if self._step_seconds else None

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
             slot: Slot | None = None, slot_timeout: float | None = None) -> TickResult:
        """Run up to `steps` (default: steps_per_tick) optimizer steps within `budget_s`, then snapshot.

        only_if_running: a tick that was waiting for a training slot while the learner pressed Pause trains
        nothing (paused means paused, however busy the server is).
        slot: the server's gate for training chunks, held while training (how many run at once is the server's
        policy, not this class's); a tick that cannot get it within `slot_timeout` seconds trains nothing."""
        steps = self.settings.steps_per_tick if steps is None else steps
        t0 = time.perf_counter()
        if slot is not None and not slot.acquire(timeout=slot_timeout):
            self.last_tick = TickResult(steps=0, seconds=0.0, waited=time.perf_counter() - t0)
            return self.last_tick
        try:
            waited = time.perf_counter() - t0
            if only_if_running and not self.running:
                steps = 0
            t1 = time.perf_counter()
            records = self.trainer.run_for(budget_s, max_steps=steps) if steps > 0 else []
            trained = time.perf_counter() - t1
            if records:
                self._step_seconds.append(trained / len(records))
            if records or not self.timeline:
                grid_due = time.monotonic() - self._grid_at >= self.map_grid_every_s
                self._record_snapshot(grid=grid_due or not self.running or bool(self.trainer.diverged))
        finally:
            if slot is not None:
                slot.release()
        if self.trainer.diverged:
            self.running = False
        self.last_tick = TickResult(steps=len(records), seconds=trained, waited=waited)
        return self.last_tick

    def step_once(self, slot: Slot | None = None) -> TickResult:
        return self.tick(budget_s=0.0, steps=1, slot=slot)

    # -- timeline ------------------------------------------------------------------------------------------
    def _record_snapshot(self, grid: bool = True) -> None:
        """grid=False: a snapshot without the routing map's grid becomes the newest, outside the timeline."""
        if not grid and self.trainer.task != "language":  # a language snapshot has no grid to leave out
            self._newest = self.trainer.snapshot(grid_size=0)
            return
        snap = self.trainer.snapshot()
        _shrink(snap)
        self._newest = None
        self._grid_at = time.monotonic()
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
        """The newest snapshot with every view's data, the routing map's grid included: the timeline's last."""
        return self.timeline[-1]

    @property
    def newest(self) -> Snapshot:
        """The newest snapshot: `latest`, or a newer one that a training tick took without the routing map's grid
        (everything else is in it: the headline's numbers, the other views). Paused, the same as `latest`."""
        return self._newest or self.timeline[-1]

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
