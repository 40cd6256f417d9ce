"""Multi-regime regression: the setting of Jacobs, Jordan, Nowlan & Hinton (1991), "Adaptive mixtures of
local experts". The input space is cut into regions, each with its own, clearly different function; a
mixture should learn to send each region to one expert, which then only has to fit a simple piece.

Two sets, both with 4 regimes and an equal number of points per regime:

  regimes    1-D, x in [-1, 1], four intervals of width 0.5 (continuity not attempted):
               [-1.0, -0.5)  steep line      y = 6 (x + 0.75)
               [-0.5,  0.0)  fast sine       y = sin(8 pi x)          (two full periods)
               [ 0.0,  0.5)  flat constant   y = 1
               [ 0.5,  1.0]  slow parabola   y = 16 (x - 0.75)^2 - 1
  regimes2d  2-D, x in [-1, 1]², one regime per quadrant, regime id = (x1 >= 0) + 2 (x2 >= 0);
             with (u, v) = the position inside the quadrant rescaled to [-1, 1]²:
               0 bottom-left   tilted plane   y = 1.5 u + 0.5 v
               1 bottom-right  ripples        y = sin(2 pi u) cos(2 pi v)
               2 top-left      flat plateau   y = 1
               3 top-right     bowl           y = u^2 + v^2 - 1

Targets are standardized with constants computed once on a dense noiseless grid (so they do not depend on
the sample), to mean 0 and variance 1; `noise` then adds Gaussian noise of standard deviation `noise` in
those standardized units (noise 0.1 = 10% of the signal's spread).
"""

from __future__ import annotations

from functools import cache

import numpy as np

REGIME_NAMES = ["steep line", "fast sine", "flat constant", "slow parabola"]
REGIME_EDGES = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])  # regime r covers [edges[r], edges[r + 1])
REGIME2D_NAMES = ["tilted plane", "ripples", "flat plateau", "bowl"]


def regime_of(x: np.ndarray) -> np.ndarray:
    """Regime id of 1-D inputs x (any shape), by interval; x = 1 belongs to the last regime."""
    return np.clip(np.searchsorted(REGIME_EDGES, x, side="right") - 1, 0, 3).astype(np.int64)


def regime2d_of(x: np.ndarray) -> np.ndarray:
    """Regime id of 2-D inputs x (N, 2), by quadrant: (x1 >= 0) + 2 (x2 >= 0)."""
    return ((x[:, 0] >= 0).astype(np.int64) + 2 * (x[:, 1] >= 0)).astype(np.int64)


def regimes_fn(x: np.ndarray) -> np.ndarray:
    """The raw (unstandardized) 1-D piecewise function."""
    return np.select(
        [regime_of(x) == r for r in range(4)],
        [6 * (x + 0.75), np.sin(8 * np.pi * x), np.ones_like(x), 16 * (x - 0.75) ** 2 - 1],
    )


def regimes2d_fn(x: np.ndarray) -> np.ndarray:
    """The raw (unstandardized) 2-D quadrant function of x (N, 2)."""
    r = regime2d_of(x)
    centre = np.where(x >= 0, 0.5, -0.5)
    u, v = ((x - centre) / 0.5).T  # position inside the quadrant, in [-1, 1]²
    return np.select(
        [r == 0, r == 1, r == 2, r == 3],
        [1.5 * u + 0.5 * v, np.sin(2 * np.pi * u) * np.cos(2 * np.pi * v), np.ones_like(u), u**2 + v**2 - 1],
    )


@cache
def _grid_stats(two_d: bool) -> tuple[float, float]:
    """Mean and std of the noiseless target over a dense uniform grid (what standardization divides by)."""
    g = np.linspace(-1, 1, 401 if two_d else 20001)
    if two_d:
        g1, g2 = np.meshgrid(g, g)
        y = regimes2d_fn(np.stack([g1.ravel(), g2.ravel()], axis=1))
    else:
        y = regimes_fn(g)
    return float(y.mean()), float(y.std())


def _uniform_in(rng: np.random.Generator, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Uniform in [low, high), rounded to float32 first (the dtype we hand out) and kept strictly below high,
    so the regime read off a stored float32 input is always the regime it was generated in."""
    x = (low + (high - low) * rng.uniform(0.0, 1.0, size=low.shape)).astype(np.float32)
    top = np.nextafter(high.astype(np.float32), np.float32(-np.inf))
    return np.clip(x, low.astype(np.float32), top).astype(np.float64)


def make_regimes(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x (n, 1), standardized y (n,), regime id (n,)) for the 1-D set; n // 4 (+1) points per regime."""
    regime = np.arange(n, dtype=np.int64) % 4
    x = _uniform_in(rng, REGIME_EDGES[regime], REGIME_EDGES[regime + 1])
    mean, std = _grid_stats(False)
    y = (regimes_fn(x) - mean) / std + noise * rng.normal(size=n)
    return x[:, None], y, regime


def make_regimes2d(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x (n, 2), standardized y (n,), regime id (n,)) for the quadrant set; n // 4 (+1) points per regime."""
    regime = np.arange(n, dtype=np.int64) % 4
    low = np.stack([np.where(regime % 2 == 1, 0.0, -1.0), np.where(regime >= 2, 0.0, -1.0)], axis=1)
    x = _uniform_in(rng, low, low + 1.0)
    mean, std = _grid_stats(True)
    y = (regimes2d_fn(x) - mean) / std + noise * rng.normal(size=n)
    return x, y, regime


GENERATORS = {"regimes": (make_regimes, REGIME_NAMES), "regimes2d": (make_regimes2d, REGIME2D_NAMES)}
