"""Run a lesson step's observations headlessly: the claims a lesson makes must hold on the real model.

    for obs in step.observe:
        result = check_observation(step, obs)      # trains the preset (and the 'against' run) per seed
        assert result.passed, result.summary

The values compared are means over the observation's seeds; batch metrics (MaxVio, load CV, ...) are
averaged over the last TAIL_STEPS training steps, so one noisy batch cannot decide a claim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from moe_core import metrics
from moe_core.lessons import Observation, Step
from moe_core.settings import PlaygroundSettings
from moe_core.trainer import Trainer

TAIL_STEPS = 100
BATCH_METRICS = ("max_vio", "load_cv", "dropped_frac", "router_entropy", "usage_entropy", "task_loss", "aux_loss")


@dataclass
class ObservationResult:
    observation: Observation
    run_values: list[float]
    against_values: list[float] | None
    passed: bool

    @property
    def summary(self) -> str:
        run = np.mean(self.run_values)
        text = f"{self.observation.what}: {self.observation.metric} = {run:.4g} (seeds {self.observation.seeds})"
        if self.against_values is not None:
            text += f" against {np.mean(self.against_values):.4g}"
        return text + (" -> holds" if self.passed else f" -> FAILS {self.observation.expect}")


def train_variant(preset: dict, changes: dict, seed: int, steps: int) -> Trainer:
    settings = PlaygroundSettings(**{**preset, **changes, "seed": seed})
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


def check_observation(step: Step, obs: Observation, runs: dict | None = None) -> ObservationResult:
    """Train the observation's runs and compare. `runs`, if given, keeps trained runs by (settings, steps)
    so that observations sharing a run (the same preset, seed and budget) train it once."""
    runs = {} if runs is None else runs

    def value(changes: dict, seed: int) -> float:
        key = (PlaygroundSettings(**{**step.preset, **changes, "seed": seed}), step.budget)
        if key not in runs:
            runs[key] = train_variant(step.preset, changes, seed, step.budget)
        return metric_value(runs[key], obs.metric)

    run_values = [value(obs.run, s) for s in obs.seeds]
    against_values = [value(obs.against, s) for s in obs.seeds] if obs.against is not None else None
    run = float(np.mean(run_values))
    other = float(np.mean(against_values)) if against_values is not None else None
    (kind, target), = obs.expect.items()
    passed = {
        "at_least": lambda: run >= target,
        "at_most": lambda: run <= target,
        "ratio_at_least": lambda: run >= target * other,
        "ratio_at_most": lambda: run <= target * other,
        "greater_than_against": lambda: run > other,
        "less_than_against": lambda: run < other,
    }[kind]()
    return ObservationResult(obs, run_values, against_values, bool(passed))
