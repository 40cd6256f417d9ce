"""PointDataset: the container every 2-D / regression data set is handed out in.

A generator (points.py, regimes.py, csv_points.py) produces one pool of points; `split_points` shuffles
it with the seed, cuts off a held-out test share and wraps both halves with the bookkeeping a visualizer
needs: which *group* each point belongs to (its class, or the regime it was generated from) so we can
later ask "which expert owns which group?", and the affine map back to the user's original units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is only needed by to_torch; keep `import moe_core.training.datasets` light
    import torch

TASKS = ("classification", "regression", "language")
PLOT_RANGE = (-1.2, 1.2)  # default extent of a 2-D routing map; generated inputs live in roughly [-1, 1]²


@dataclass(frozen=True)
class TorchData:
    """The arrays of a PointDataset as torch tensors on one device."""

    x_train: torch.Tensor  # (N_train, D) float32
    y_train: torch.Tensor  # (N_train,) int64 labels or float32 targets
    x_test: torch.Tensor  # (N_test, D) float32
    y_test: torch.Tensor  # (N_test,)
    group_train: torch.Tensor  # (N_train,) int64 class / regime id
    group_test: torch.Tensor  # (N_test,) int64


@dataclass(frozen=True, eq=False)  # eq=False: comparing numpy arrays with == is elementwise, not a bool
class PointDataset:
    """A train/test split of points in roughly [-1, 1]^D, plus the groups an expert may specialise on.

    Original units: x_original = x * x_scale + x_offset (identity for generated sets; the CSV loader
    stores its min-max rescaling here). Likewise y_original = y * y_scale + y_offset for regression.
    """

    name: str  # registry name ("spirals", "regimes", ...) or "csv"
    description: str  # one line for the UI
    task: str  # "classification" | "regression"
    x_train: np.ndarray  # (N_train, D) float32
    y_train: np.ndarray  # (N_train,) int64 class labels, or float32 standardized targets
    x_test: np.ndarray  # (N_test, D) float32
    y_test: np.ndarray  # (N_test,)
    group_train: np.ndarray  # (N_train,) int64: the class (classification) or the regime id (regression)
    group_test: np.ndarray  # (N_test,) int64
    n_classes: int  # number of classes; 0 for regression
    group_names: list[str]  # one name per group id, e.g. "class 0" or "steep line"
    x_offset: np.ndarray  # (D,) float64, see the class docstring
    x_scale: np.ndarray  # (D,) float64
    y_offset: float = 0.0  # regression only: y_original = y * y_scale + y_offset
    y_scale: float = 1.0

    def __post_init__(self) -> None:
        # Cheap consistency checks: a wrong shape here would otherwise surface as a confusing plot.
        if self.task not in ("classification", "regression"):
            raise ValueError(f"task={self.task!r} is not a point task: allowed classification, regression")
        for split in ("train", "test"):
            x, y, g = (getattr(self, f"{a}_{split}") for a in ("x", "y", "group"))
            if x.ndim != 2 or x.dtype != np.float32:
                raise ValueError(f"x_{split} must be a 2-D float32 array, got {x.dtype} {x.shape}")
            if y.shape != (len(x),) or g.shape != (len(x),):
                raise ValueError(f"y_{split}/group_{split} must have shape ({len(x)},), got {y.shape}, {g.shape}")
            want = np.int64 if self.task == "classification" else np.float32
            if y.dtype != want or g.dtype != np.int64:
                raise ValueError(f"y_{split} must be {np.dtype(want)} and group_{split} int64")
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise ValueError("x_train and x_test have different widths")

    # -- derived sizes ------------------------------------------------------------------------------
    @property
    def input_dim(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def n_test(self) -> int:
        return len(self.x_test)

    # -- conversions --------------------------------------------------------------------------------
    def to_original(self, x: np.ndarray) -> np.ndarray:
        """Map model-space inputs back to the units the points came in (e.g. for axis labels)."""
        return np.asarray(x, dtype=np.float64) * self.x_scale + self.x_offset

    def from_original(self, x: np.ndarray) -> np.ndarray:
        """Map original-unit inputs into model space (float32)."""
        return ((np.asarray(x, dtype=np.float64) - self.x_offset) / self.x_scale).astype(np.float32)

    def to_torch(self, device: str | torch.device = "cpu") -> TorchData:
        """All six arrays as tensors on `device` (copies; the numpy arrays stay untouched)."""
        import torch

        def t(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a)).to(device)

        return TorchData(
            t(self.x_train), t(self.y_train), t(self.x_test), t(self.y_test),
            t(self.group_train), t(self.group_test),
        )


def split_points(
    x: np.ndarray,
    y: np.ndarray,
    group: np.ndarray,
    *,
    test_fraction: float,
    rng: np.random.Generator,
    **meta: Any,
) -> PointDataset:
    """Shuffle one pool of points with `rng` and cut off round(N * test_fraction) of them (at least 1) as test.

    The split is random, not stratified: with balanced pools of hundreds of points the test classes come
    out roughly balanced anyway, and a plain shuffle is easier to explain.
    """
    n = len(x)
    if n < 2:
        raise ValueError(f"need at least 2 points to split into train and test, got {n}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction!r} is out of range: allowed a number in (0, 1)")
    n_test = min(max(1, round(n * test_fraction)), n - 1)
    perm = rng.permutation(n)
    test, train = perm[:n_test], perm[n_test:]
    y_dtype = np.int64 if meta["task"] == "classification" else np.float32
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=y_dtype)
    group = np.asarray(group, dtype=np.int64)
    d = x.shape[1]
    meta.setdefault("x_offset", np.zeros(d))
    meta.setdefault("x_scale", np.ones(d))
    return PointDataset(
        x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test],
        group_train=group[train], group_test=group[test], **meta,
    )
