"""2-D classification sets: blobs, moons, spirals, checkerboard, xor, rings.

Every generator has the signature `(n, noise, n_classes, rng) -> (x, y)` and returns x as (n, 2) float64
inside roughly [-1, 1]² (Gaussian jitter may push a few points slightly outside; we do not clip, since
clipping would pile points up on the border) and y as (n,) int64 labels. Classes are exactly balanced:
label i % n_classes goes to point i, and the caller shuffles.

What `noise` (0..1) means, per set. Each is Gaussian position jitter, sized so that 0 is perfectly clean,
0.1 (the default) is clean-looking and 1 makes neighbouring classes overlap heavily:

    blobs         blob standard deviation = 0.05 + 0.3 * noise (centres 0.6 from the origin)
    moons         jitter std = 0.3 * noise (each moon has radius 0.6)
    spirals       jitter std = 0.5 * noise * gap, gap = radial distance between neighbouring arms
    checkerboard  jitter std = 0.25 * noise (cells are 0.5 wide)
    xor           jitter std = 0.25 * noise
    rings         radial jitter std = 0.5 * noise * gap, gap = distance between neighbouring rings
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SPIRAL_TURNS = 1.0  # turns of each spiral arm from centre to rim; more turns = harder
SPIRAL_R0 = 0.05  # spiral arms start at this radius and end at radius 1
BLOB_RADIUS = 0.6  # blob centres sit evenly spaced on a circle of this radius
RING_OUTER = 0.95  # the outermost ring's radius; ring k (0-based) has radius RING_OUTER * (k + 1) / n
CHECKER_CELLS = 4  # the checkerboard is CHECKER_CELLS x CHECKER_CELLS cells over [-1, 1]²

Generator = Callable[[int, float, int, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _balanced_labels(n: int, k: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) % k


def _polar(r: np.ndarray, theta: np.ndarray) -> np.ndarray:
    return np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)


def make_blobs(n: int, noise: float, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n_classes round Gaussian blobs whose centres sit evenly on a circle (the first one at the top)."""
    y = _balanced_labels(n, n_classes)
    angle = np.pi / 2 + 2 * np.pi * np.arange(n_classes) / n_classes
    centres = BLOB_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    x = centres[y] + rng.normal(0.0, 0.05 + 0.3 * noise, size=(n, 2))
    return x, y


def make_moons(n: int, noise: float, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles (as sklearn's make_moons), shrunk by 0.6 and centred on the origin.

    Always 2 classes; n_classes is ignored.
    """
    y = _balanced_labels(n, 2)
    t = rng.uniform(0.0, np.pi, size=n)
    upper = np.stack([np.cos(t), np.sin(t)], axis=1)  # class 0: the upper moon
    lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)  # class 1: the lower moon, shifted right
    x = np.where((y == 0)[:, None], upper, lower)
    x = (x - np.array([0.5, 0.25])) * 0.6  # bounding box [-1, 2] x [-0.5, 1] -> [-0.9, 0.9] x [-0.45, 0.45]
    return x + rng.normal(0.0, 0.3 * noise, size=(n, 2)), y


def spiral_angle(radius: np.ndarray, arm: np.ndarray, n_arms: int) -> np.ndarray:
    """Polar angle of arm `arm` at `radius` on the noiseless spiral (exposed for tests and plots)."""
    u = (radius - SPIRAL_R0) / (1.0 - SPIRAL_R0)  # 0 at the centre, 1 at the rim
    return 2 * np.pi * arm / n_arms + 2 * np.pi * SPIRAL_TURNS * u


def make_spirals(n: int, noise: float, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n_classes interleaved Archimedean spiral arms, one class each, from radius 0.05 out to radius 1.

    Points are uniform along the radius (so denser, per unit area, near the centre, where the arms are
    also closest together: the hard part).
    """
    y = _balanced_labels(n, n_classes)
    r = rng.uniform(SPIRAL_R0, 1.0, size=n)
    x = _polar(r, spiral_angle(r, y, n_classes))
    gap = (1.0 - SPIRAL_R0) / (n_classes * SPIRAL_TURNS)  # radial distance between neighbouring arms
    return x + rng.normal(0.0, 0.5 * noise * gap, size=(n, 2)), y


def make_checkerboard(
    n: int, noise: float, n_classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A 4x4 checkerboard over [-1, 1]², 2 classes: label = (column + row) % 2 of the cell (n_classes ignored).

    Each point first picks one of the 8 cells of its class, then a uniform position inside it.
    """
    y = _balanced_labels(n, 2)
    c = CHECKER_CELLS
    k = rng.integers(0, c * c // 2, size=n)  # which of the class's cells
    row = k // (c // 2)
    col = 2 * (k % (c // 2)) + (row + y) % 2  # parity of (col + row) equals the label
    cell = 2.0 / c
    x = np.stack([-1.0 + cell * col, -1.0 + cell * row], axis=1) + rng.uniform(0.0, cell, size=(n, 2))
    return x + rng.normal(0.0, 0.25 * noise, size=(n, 2)), y


def make_xor(n: int, noise: float, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points in [-1, 1]²; label = (x1 > 0) xor (x2 > 0), i.e. 1 in the top-left and bottom-right."""
    y = _balanced_labels(n, 2)
    x1_pos = rng.integers(0, 2, size=n).astype(bool)  # pick one of the class's two quadrants
    x2_pos = x1_pos ^ y.astype(bool)
    mag = rng.uniform(0.0, 1.0, size=(n, 2))
    x = np.stack([np.where(x1_pos, mag[:, 0], -mag[:, 0]), np.where(x2_pos, mag[:, 1], -mag[:, 1])], axis=1)
    return x + rng.normal(0.0, 0.25 * noise, size=(n, 2)), y


def make_rings(n: int, noise: float, n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n_classes concentric rings, class k on the k-th ring from the centre (equal points per ring)."""
    y = _balanced_labels(n, n_classes)
    gap = RING_OUTER / n_classes
    r = gap * (y + 1) + rng.normal(0.0, 0.5 * noise * gap, size=n)
    theta = rng.uniform(0.0, 2 * np.pi, size=n)
    return _polar(r, theta), y


GENERATORS: dict[str, Generator] = {
    "blobs": make_blobs,
    "moons": make_moons,
    "spirals": make_spirals,
    "checkerboard": make_checkerboard,
    "xor": make_xor,
    "rings": make_rings,
}
FIXED_CLASSES = {"moons": 2, "checkerboard": 2, "xor": 2}  # sets that ignore n_classes
