"""Run a lesson step's observations headlessly: the claims a lesson makes must hold on the real model.

    values = measure_all(jobs_for(step, obs, path))           # trains each (settings, budget, path) once
    result = check_observation(step, obs, path, values)
    assert result.passed, result.summary

A claim holds only if it holds on **every** seed it names (at least MIN_SEEDS of them), on both compute paths
(PATHS: the C kernels of moe_core.accelerator.kernels, and torch ops alone with MOE_PLAYGROUND_NATIVE=0), and clears its
bound by MARGIN on each: a value that clears it by less would flip on another machine's floating point
(lesson 8 step 3 once passed on one CPU at 1.9 % against "under 2 %" and failed on an AVX-512 one at 3.9 %).

MARGIN is relative to the bound: "at least b" needs value >= b + MARGIN * |b|, "at most b" needs
value <= b - MARGIN * |b|; a ratio claim's bound is target * against, a greater/less claim's bound is the
against value (and must be beaten strictly). For a share (SHARES, and a classifier's accuracy: values in
[0, 1]) the margin is taken from the nearer end, MARGIN * min(b, 1 - b): "at least 97 % accurate" is
"at most 3 % wrong" and needs 5 % fewer errors than the claim allows, whichever way the text puts it.
A bound of 0 keeps no margin: "exactly 0" claims are exact by construction. Counts (distinct_owners) state
half-integer bounds, e.g. at_least 3.5 for "all 4".
A [predict] answer is checked the same way: on each of PREDICT_SEEDS and both paths, the value lies inside the
answer's range and at least the margin away from each of its ends.

Batch metrics (MaxVio, load CV, ...) are averaged over the last TAIL_STEPS training steps, so one noisy batch
cannot decide a claim.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
import torch

from moe_core.layer import metrics
from moe_core.lessons.lesson import Observation, Predict, Step
from moe_core.training.datasets import DATASETS
from moe_core.training.settings import PlaygroundSettings
from moe_core.training.trainer import Trainer

TAIL_STEPS = 100
BATCH_METRICS = ("max_vio", "load_cv", "dropped_frac", "router_entropy", "usage_entropy", "task_loss", "aux_loss")
MARGIN = 0.05  # every seed clears its bound by 5 % of the bound (see the module docstring)
MIN_SEEDS = 3  # an observation names at least this many seeds
PREDICT_SEEDS = (0, 1, 2)
PATHS = ("native", "torch")  # the C kernels where they build; torch ops alone (MOE_PLAYGROUND_NATIVE=0)
SHARES = ("dropped_frac", "regime_ownership", "active_fraction")  # values in [0, 1]
_LOWER = ("at_least", "ratio_at_least", "greater_than_against")  # bounds from below; the others from above


@dataclass(frozen=True)
class RunKey:
    """One training run: the settings (seed included), the steps it trains, the compute path."""
    settings: PlaygroundSettings
    steps: int
    path: str


def run_key(step: Step, changes: dict, seed: int, path: str) -> RunKey:
    if path not in PATHS:
        raise ValueError(f"path must be one of {PATHS}, got {path!r}")
    return RunKey(PlaygroundSettings(**{**step.preset, **changes, "seed": seed}), step.budget, path)


@contextmanager
def compute_path(path: str) -> Iterator[None]:
    """Run the block on one compute path: 'torch' sets MOE_PLAYGROUND_NATIVE=0 (moe_core.accelerator.kernels reads it on
    every call), 'native' unsets it; the variable is restored afterwards."""
    old = os.environ.get("MOE_PLAYGROUND_NATIVE")
    if path == "torch":
        os.environ["MOE_PLAYGROUND_NATIVE"] = "0"
    else:
        os.environ.pop("MOE_PLAYGROUND_NATIVE", None)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MOE_PLAYGROUND_NATIVE", None)
        else:
            os.environ["MOE_PLAYGROUND_NATIVE"] = old


def accelerator_available() -> bool:
    """Whether the C kernels build and load here; if not, the 'native' path runs torch ops like 'torch'."""
    from moe_core.accelerator import kernels as native
    with compute_path("native"):
        return native.kernels() is not None


def train_variant(preset: dict, changes: dict, seed: int, steps: int) -> Trainer:
    settings = PlaygroundSettings(**{**preset, **changes, "seed": seed})
    return _train(settings, steps)


def _train(settings: PlaygroundSettings, steps: int) -> Trainer:
    model, data, train = settings.to_configs()
    trainer = Trainer(model, data, train)
    trainer.step(steps)
    return trainer


def metric_value(trainer: Trainer, metric: str) -> float:
    if metric in BATCH_METRICS:
        history = trainer.history
        return float(history[metric].tail(TAIL_STEPS).mean())
    if metric == "test_quality":
        return trainer.snapshot().test_quality
    if metric == "mutual_information":
        return trainer.snapshot().layers[0].mutual_information
    if metric == "active_fraction":
        counts = metrics.parameter_counts(trainer.model_config.moe)
        return counts["active"] / counts["total"]
    if metric in ("regime_ownership", "distinct_owners"):
        shares = ownership(trainer)
        if metric == "regime_ownership":
            return float(shares.max(axis=1).min())
        return float(len(set(shares.argmax(axis=1).tolist())))
    raise KeyError(metric)


@torch.no_grad()
def ownership(trainer: Trainer) -> np.ndarray:
    """(groups, E): share of each group's test points whose top-1 router choice (layer 1) is each expert."""
    model = trainer.model
    model.eval()
    _, infos = model(trainer.tensors.x_test)
    model.train()
    top1 = infos[0].router_probs.argmax(-1)
    groups = trainer.tensors.group_test
    counts = metrics.expert_label_counts(top1[:, None], groups, trainer.n_experts, trainer.dataset.n_groups)
    counts = counts.float().cpu().numpy()
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def measure(key: RunKey, wanted: tuple[str, ...]) -> dict[str, float]:
    """Train one run on its compute path and return the wanted metrics."""
    with compute_path(key.path):
        trainer = _train(key.settings, key.steps)
        return {m: metric_value(trainer, m) for m in wanted}


def _init_worker() -> None:
    torch.set_num_threads(1)  # one thread per process: the pool, not torch, uses the cores


def _cost(key: RunKey) -> float:
    """Rough relative cost, to start the longest runs first (language steps cost several point steps)."""
    return key.steps * (6 if key.settings.is_language else 1) * (1 + key.settings.n_experts / 16)


def measure_all(jobs: Mapping[RunKey, set[str]], processes: int = 2) -> dict[RunKey, dict[str, float]]:
    """Measure every run (in a pool of `processes` fresh processes, each with one torch thread and its own
    compute path per run), the longest first. Every run is seeded, so the pool changes the time, not a value."""
    order = sorted(jobs, key=_cost, reverse=True)
    if processes <= 1:
        return {key: measure(key, tuple(sorted(jobs[key]))) for key in order}
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        futures = {key: pool.submit(measure, key, tuple(sorted(jobs[key]))) for key in order}
        return {key: future.result() for key, future in futures.items()}


def observation_jobs(step: Step, obs: Observation, path: str) -> dict[RunKey, set[str]]:
    jobs: dict[RunKey, set[str]] = {}
    for seed in obs.seeds:
        for changes in (obs.run, obs.against):
            if changes is not None:
                jobs.setdefault(run_key(step, changes, seed, path), set()).add(obs.metric)
    return jobs


def predict_jobs(step: Step, path: str) -> dict[RunKey, set[str]]:
    assert step.predict is not None
    return {run_key(step, {}, seed, path): {step.predict.metric} for seed in PREDICT_SEEDS}


def is_share(metric: str, preset: dict) -> bool:
    """Whether the metric's values lie in [0, 1] for this preset (test_quality: a classifier's accuracy)."""
    if metric == "test_quality":
        return DATASETS[preset.get("dataset", PlaygroundSettings.dataset)].task == "classification"
    return metric in SHARES


def margin(bound: float, share: bool = False) -> float:
    """How far a value must clear `bound` (see the module docstring)."""
    return MARGIN * (min(abs(bound), abs(1 - bound)) if share else abs(bound))


def required(kind: str, target: float, other: float | None, share: bool = False) -> float:
    """The value a seed must reach (at least, for _LOWER kinds; at most, for the others), margin included.
    Only absolute bounds (at_least, at_most) on a share take the share margin; ratios are relative."""
    bound = {"at_least": target, "at_most": target, "ratio_at_least": target * (other or 0.0),
             "ratio_at_most": target * (other or 0.0), "greater_than_against": other,
             "less_than_against": other}[kind]
    assert bound is not None, kind
    room = margin(bound, share and kind in ("at_least", "at_most"))
    return bound + room if kind in _LOWER else bound - room


def clears(kind: str, target: float, run: float, other: float | None, share: bool = False) -> bool:
    need = required(kind, target, other, share)
    if kind == "greater_than_against":
        return run > other and run >= need
    if kind == "less_than_against":
        return run < other and run <= need
    return run >= need if kind in _LOWER else run <= need


@dataclass
class ObservationResult:
    observation: Observation
    path: str
    run_values: list[float]
    against_values: list[float] | None
    failures: list[str]  # one line per seed that does not clear its bound

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def summary(self) -> str:
        obs = self.observation
        values = ", ".join(f"seed {s}: {v:.4g}" for s, v in zip(obs.seeds, self.run_values, strict=True))
        text = f"{obs.what} [{self.path} path]: {obs.metric} {values}"
        if self.against_values is not None:
            text += " against " + ", ".join(f"{v:.4g}" for v in self.against_values)
        return text + (" -> holds" if self.passed else " -> FAILS:\n  " + "\n  ".join(self.failures))


def check_observation(step: Step, obs: Observation, path: str = "native",
                      values: Mapping[RunKey, dict[str, float]] | None = None) -> ObservationResult:
    """Compare the observation on each of its seeds, on one compute path. `values` holds measured runs
    (measure_all); without it the runs are trained here, one after another."""
    if values is None:
        values = measure_all(observation_jobs(step, obs, path), processes=1)

    def value(changes: dict, seed: int) -> float:
        return values[run_key(step, changes, seed, path)][obs.metric]

    run_values = [value(obs.run, s) for s in obs.seeds]
    against_values = [value(obs.against, s) for s in obs.seeds] if obs.against is not None else None
    (kind, target), = obs.expect.items()
    share = is_share(obs.metric, {**step.preset, **obs.run})
    failures = []
    for i, seed in enumerate(obs.seeds):
        other = against_values[i] if against_values is not None else None
        if not clears(kind, float(target), run_values[i], other, share):
            against = f" against {other:.4g}" if other is not None else ""
            failures.append(f"seed {seed}, {path} path: {obs.metric} = {run_values[i]:.4g}{against}; "
                            f"{kind} {target} needs {'>=' if kind in _LOWER else '<='} "
                            f"{required(kind, float(target), other, share):.4g} with the {MARGIN:.0%} margin")
    return ObservationResult(obs, path, run_values, against_values, failures)


def predict_failures(predict: Predict, seed_values: Mapping[int, float], path: str,
                     share: bool = False) -> list[str]:
    """One line per seed whose value is outside the answer's range or within the margin of one of its ends."""
    lo = predict.bounds[predict.answer - 1] if predict.answer > 0 else None
    hi = predict.bounds[predict.answer] if predict.answer < len(predict.bounds) else None
    lo = None if lo is None else lo + margin(lo, share)
    hi = None if hi is None else hi - margin(hi, share)
    failures = []
    for seed, v in seed_values.items():
        inside = (lo is None or v >= lo) and (hi is None or v <= hi)
        if not inside:
            failures.append(
                f"seed {seed}, {path} path: {predict.metric} = {v:.4g} lands in "
                f"'{predict.options[predict.option_for(v)]}'"
                + (" (within the margin of its end)" if predict.option_for(v) == predict.answer else "")
                + f"; the file says '{predict.options[predict.answer]}' (with the {MARGIN:.0%} margin: "
                f"{'' if lo is None else f'>= {lo:.4g}'}"
                f"{' and ' if lo is not None and hi is not None else ''}"
                f"{'' if hi is None else f'<= {hi:.4g}'})")
    return failures
