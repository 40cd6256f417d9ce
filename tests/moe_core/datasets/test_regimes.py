"""Multi-regime regression sets (Jacobs et al. 1991): every sample knows the regime it came from."""

import numpy as np
import pytest

from moe_core.training.datasets import DataConfig, PointDataset, make_dataset

INTERVALS = [(-1.0, -0.5), (-0.5, 0.0), (0.0, 0.5), (0.5, 1.0)]  # regime r of "regimes", from the docs


def pool(ds: PointDataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cat = np.concatenate
    return cat([ds.x_train, ds.x_test]), cat([ds.y_train, ds.y_test]), cat([ds.group_train, ds.group_test])


@pytest.mark.parametrize("name, dim", [("regimes", 1), ("regimes2d", 2)])
def test_shapes_dtypes_and_metadata(name, dim):
    ds = make_dataset(DataConfig(dataset=name, n_samples=1000, test_fraction=0.2))
    assert ds.task == "regression" and ds.n_classes == 0 and ds.n_groups == 4 and ds.input_dim == dim
    assert ds.x_train.shape == (800, dim) and ds.x_test.shape == (200, dim)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.float32
    assert ds.y_train.shape == (800,) and ds.group_train.dtype == np.int64
    assert len(ds.group_names) == 4 and len(set(ds.group_names)) == 4


@pytest.mark.parametrize("name", ["regimes", "regimes2d"])
def test_deterministic_in_the_seed(name):
    a, b = make_dataset(DataConfig(dataset=name, seed=5)), make_dataset(DataConfig(dataset=name, seed=5))
    for p, q in zip(pool(a), pool(b), strict=True):
        assert np.array_equal(p, q)
    assert not np.array_equal(pool(a)[0], pool(make_dataset(DataConfig(dataset=name, seed=6)))[0])


@pytest.mark.parametrize("seed", range(5))
def test_regime_id_matches_its_interval(seed):
    ds = make_dataset(DataConfig(dataset="regimes", seed=seed, n_samples=5000))
    assert ds.group_names == ["steep line", "fast sine", "flat constant", "slow parabola"]
    x, _, g = pool(ds)
    x = x[:, 0]
    assert np.all((x >= -1) & (x <= 1))
    for r, (lo, hi) in enumerate(INTERVALS):
        inside = (x >= lo) & ((x < hi) if r < 3 else (x <= hi))
        assert np.array_equal(inside, g == r), r


@pytest.mark.parametrize("seed", range(5))
def test_regime2d_id_matches_its_quadrant(seed):
    x, _, g = pool(make_dataset(DataConfig(dataset="regimes2d", seed=seed, n_samples=5000)))
    assert np.all(np.abs(x) <= 1)
    right, top = x[:, 0] >= 0, x[:, 1] >= 0
    expected = np.select([~right & ~top, right & ~top, ~right & top, right & top], [0, 1, 2, 3])
    assert np.array_equal(g, expected)


@pytest.mark.parametrize("name", ["regimes", "regimes2d"])
def test_regimes_are_balanced_and_target_standardized(name):
    _, y, g = pool(make_dataset(DataConfig(dataset=name, n_samples=20000, noise=0.0)))
    assert np.array_equal(np.bincount(g), [5000] * 4)
    assert abs(y.mean()) < 0.05 and abs(y.std() - 1) < 0.05


def test_regimes_differ_in_slope_and_frequency():
    x, y, g = pool(make_dataset(DataConfig(dataset="regimes", n_samples=8000, noise=0.0)))
    x = x[:, 0].astype(np.float64)
    y = y.astype(np.float64)

    def fit_residual(r, degree):
        coef, res, *_ = np.polyfit(x[g == r], y[g == r], degree, full=True)
        return coef, float(res[0]) / (g == r).sum() if len(res) else 0.0

    line, res_line = fit_residual(0, 1)
    assert line[0] > 5 and res_line < 1e-8  # steep line: slope > 5 in standardized units
    _, res_sine = fit_residual(1, 2)
    assert res_sine > 0.1  # not a low-order polynomial ...
    xs, ys = x[g == 1], y[g == 1]
    ys = ys[np.argsort(xs)] - ys.mean()
    assert np.count_nonzero(np.diff(np.sign(ys))) >= 3  # ... but oscillating: 2 periods -> >= 3 crossings
    assert np.ptp(y[g == 2]) < 1e-6  # flat constant
    parab, res_parab = fit_residual(3, 2)
    assert parab[0] > 0 and res_parab < 1e-8  # a parabola opening upwards


def test_noise_is_gaussian_with_std_noise_in_standardized_units():
    # the noise is drawn after the inputs, so the same seed gives the same x and a noisier y
    clean = make_dataset(DataConfig(dataset="regimes", n_samples=20000, noise=0.0))
    noisy = make_dataset(DataConfig(dataset="regimes", n_samples=20000, noise=0.3))
    assert np.array_equal(clean.x_train, noisy.x_train)
    diff = noisy.y_train - clean.y_train
    assert abs(diff.std() - 0.3) < 0.01 and abs(diff.mean()) < 0.01
