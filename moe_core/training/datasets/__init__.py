"""Data sets for the playground, all generated from a seed (nothing is downloaded).

    from moe_core.training.datasets import DataConfig, make_dataset, make_token_stream
    ds = make_dataset(DataConfig(dataset="spirals", n_classes=3, seed=0))  # a PointDataset
    stream = make_token_stream(seed=0)                                     # a TokenStream

Three kinds (DatasetInfo.task):
  classification  2-D points in roughly [-1, 1]² with integer labels (points.py)
  regression      1-D or 2-D inputs in [-1, 1]^D with a standardized target and a regime id (regimes.py)
  language        a character stream whose lines come from four domains (tokens.py)
Users can also bring their own 2-D points as CSV (csv_points.py).

Same DataConfig => identical arrays, on any machine: everything flows from np.random.default_rng(seed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from moe_core.training.datasets import points, regimes
from moe_core.training.datasets.base import PLOT_RANGE, TASKS, PointDataset, TorchData, split_points
from moe_core.training.datasets.csv_points import CSVError, CSVProblem, parse_points_csv
from moe_core.training.datasets.tokens import DOMAINS, VOCAB, TokenStream, make_token_stream, probe_text
from moe_core.validation import DictRoundTrip, check_float, check_int, fail


@dataclass(frozen=True)
class DatasetInfo:
    """What the UI needs to list a data set and label its controls."""

    name: str
    task: str  # "classification" | "regression" | "language"
    description: str  # one line for the UI
    noise_help: str  # what the noise slider does for this set
    n_classes_range: tuple[int, int] | None  # allowed n_classes; None = the set has a fixed count


_INFOS = [
    DatasetInfo("blobs", "classification",
                "Round Gaussian blobs, one per class: the easy case, a linear boundary per pair of classes.",
                "blob standard deviation 0.05 + 0.3 x noise", (2, 10)),
    DatasetInfo("moons", "classification",
                "Two interleaved half-moons: a curved boundary no single linear expert can draw.",
                "position jitter, std 0.3 x noise", None),
    DatasetInfo("spirals", "classification",
                "Interleaved spiral arms, one per class: experts can split the plane into angular sectors.",
                "position jitter, std = noise x half the gap between arms", (2, 8)),
    DatasetInfo("checkerboard", "classification",
                "A 4x4 checkerboard of 2 classes: many small local rules, a natural job for many experts.",
                "position jitter, std 0.25 x noise (cells are 0.5 wide)", None),
    DatasetInfo("xor", "classification",
                "XOR of the two signs: opposite quadrants share a class, one linear cut is never enough.",
                "position jitter, std 0.25 x noise", None),
    DatasetInfo("rings", "classification",
                "Concentric rings, one per class: the boundary depends on radius, not direction.",
                "radial jitter, std = noise x half the gap between rings", (2, 10)),
    DatasetInfo("regimes", "regression",
                "1-D function with 4 regimes (steep line, fast sine, flat, parabola): each expert can own one.",
                "Gaussian target noise, std = noise (target has unit variance)", None),
    DatasetInfo("regimes2d", "regression",
                "2-D function with a different shape in each quadrant (plane, ripples, plateau, bowl).",
                "Gaussian target noise, std = noise (target has unit variance)", None),
    DatasetInfo("tokens", "language",
                "Character stream mixing arithmetic, pseudo-English, code and dates, one domain per line.",
                "not used", None),
]
DATASETS: dict[str, DatasetInfo] = {info.name: info for info in _INFOS}

MAX_SAMPLES = 100_000
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class DataConfig(DictRoundTrip):
    dataset: str = "spirals"  # one of DATASETS
    n_samples: int = 2000  # points (train + test) for 2-D / regression sets (20-100000)
    noise: float = 0.1  # 0..1, dataset-specific meaning: see DATASETS[name].noise_help
    n_classes: int = 3  # classes for blobs / rings (2-10), arms for spirals (2-8); ignored by fixed sets
    test_fraction: float = 0.2  # held-out share (0.05-0.5)
    seed: int = 0  # 0 .. 2**32 - 1; the only source of randomness

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            fail("dataset", self.dataset, "one of " + ", ".join(DATASETS))
        check_int(self, "n_samples", 20, MAX_SAMPLES)
        check_float(self, "noise", 0.0, 1.0)
        low, high = DATASETS[self.dataset].n_classes_range or (2, 10)
        check_int(self, "n_classes", low, high, f" for dataset {self.dataset!r}" if high != 10 else "")
        check_float(self, "test_fraction", 0.05, 0.5)
        check_int(self, "seed", 0, MAX_SEED)

    @property
    def info(self) -> DatasetInfo:
        return DATASETS[self.dataset]


def make_dataset(cfg: DataConfig) -> PointDataset:
    """Generate the 2-D classification or regression set described by cfg (deterministic in cfg)."""
    info = DATASETS[cfg.dataset]
    if info.task == "language":
        raise ValueError(f"dataset {cfg.dataset!r} is a character stream, not points: "
                         "use make_token_stream(seed, n_chars) from moe_core.training.datasets instead")
    rng = np.random.default_rng(cfg.seed)
    meta: dict[str, Any] = dict(name=cfg.dataset, description=info.description, task=info.task)
    if info.task == "classification":
        k = points.FIXED_CLASSES.get(cfg.dataset, cfg.n_classes)
        x, y = points.GENERATORS[cfg.dataset](cfg.n_samples, cfg.noise, k, rng)
        meta.update(n_classes=k, group_names=[f"class {c}" for c in range(k)])
        group = y
    else:
        make, names = regimes.GENERATORS[cfg.dataset]
        x, y, group = make(cfg.n_samples, cfg.noise, rng)
        meta.update(n_classes=0, group_names=list(names))
    return split_points(x, y, group, test_fraction=cfg.test_fraction, rng=rng, **meta)


__all__ = [
    "CSVError", "CSVProblem", "DATASETS", "DOMAINS", "DataConfig", "DatasetInfo", "PLOT_RANGE", "PointDataset",
    "TASKS", "TokenStream", "TorchData", "VOCAB", "make_dataset", "make_token_stream", "parse_points_csv",
    "probe_text",
]
