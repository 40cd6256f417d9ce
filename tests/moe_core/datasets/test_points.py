"""2-D classification sets, DataConfig validation and the registry."""

import numpy as np
import pytest
import torch

from moe_core.training.datasets import (
    DATASETS,
    PLOT_RANGE,
    TASKS,
    DataConfig,
    PointDataset,
    make_dataset,
)
from moe_core.training.datasets.points import spiral_angle

POINT_SETS = [n for n, info in DATASETS.items() if info.task == "classification"]
ALL_POINT_SETS = [n for n, info in DATASETS.items() if info.task != "language"]


def pool(ds: PointDataset) -> tuple[np.ndarray, np.ndarray]:
    """Train and test back together (order does not matter for these checks)."""
    return np.concatenate([ds.x_train, ds.x_test]), np.concatenate([ds.y_train, ds.y_test])


def test_registry_lists_every_set_with_a_description():
    assert set(POINT_SETS) == {"blobs", "moons", "spirals", "checkerboard", "xor", "rings"}
    assert {"regimes", "regimes2d", "tokens"} <= set(DATASETS)
    for name, info in DATASETS.items():
        assert info.name == name
        assert info.task in TASKS
        assert info.description and "\n" not in info.description
        assert info.noise_help


@pytest.mark.parametrize("name", ALL_POINT_SETS)
def test_same_config_gives_identical_arrays(name):
    a, b = make_dataset(DataConfig(dataset=name, seed=3)), make_dataset(DataConfig(dataset=name, seed=3))
    c = make_dataset(DataConfig(dataset=name, seed=4))
    for field in ("x_train", "y_train", "x_test", "y_test", "group_train", "group_test"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert not np.array_equal(a.x_train, c.x_train)


@pytest.mark.parametrize("name", POINT_SETS)
def test_shapes_dtypes_and_split_sizes(name):
    cfg = DataConfig(dataset=name, n_samples=1000, test_fraction=0.25)
    ds = make_dataset(cfg)
    assert (ds.n_train, ds.n_test) == (750, 250)
    assert ds.x_train.shape == (750, 2) and ds.x_test.shape == (250, 2)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64 and ds.group_train.dtype == np.int64
    assert ds.input_dim == 2 and ds.task == "classification" and ds.name == name
    assert np.array_equal(ds.group_train, ds.y_train) and np.array_equal(ds.group_test, ds.y_test)
    assert ds.n_groups == ds.n_classes == len(ds.group_names)
    assert ds.group_names[0] == "class 0"
    assert ds.description == DATASETS[name].description


@pytest.mark.parametrize("name", POINT_SETS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inputs_are_roughly_in_the_unit_square(name, seed):
    x, _ = pool(make_dataset(DataConfig(dataset=name, seed=seed)))  # default noise 0.1
    assert np.all(np.abs(x) <= PLOT_RANGE[1])
    x0, _ = pool(make_dataset(DataConfig(dataset=name, seed=seed, noise=0.0)))
    assert np.all(np.abs(x0) <= 1.0)


@pytest.mark.parametrize("name", POINT_SETS)
def test_classes_are_balanced(name):
    ds = make_dataset(DataConfig(dataset=name, n_samples=2001, n_classes=4 if name != "spirals" else 3))
    _, y = pool(ds)
    counts = np.bincount(y, minlength=ds.n_classes)
    assert len(counts) == ds.n_classes
    assert counts.max() - counts.min() <= 1
    # and the random split keeps the test set roughly balanced too
    test_share = np.bincount(ds.y_test, minlength=ds.n_classes) / ds.n_test
    assert np.all(np.abs(test_share - 1 / ds.n_classes) < 0.08)


def test_fixed_sets_ignore_n_classes():
    for name in ("moons", "xor", "checkerboard"):
        ds = make_dataset(DataConfig(dataset=name, n_classes=5))
        assert ds.n_classes == 2 and set(np.unique(pool(ds)[1])) == {0, 1}


def test_xor_label_is_xor_of_signs_at_noise_0():
    x, y = pool(make_dataset(DataConfig(dataset="xor", noise=0.0)))
    assert np.array_equal(y, ((x[:, 0] > 0) ^ (x[:, 1] > 0)).astype(np.int64))


def test_checkerboard_label_is_cell_parity_at_noise_0():
    x, y = pool(make_dataset(DataConfig(dataset="checkerboard", noise=0.0, n_samples=4000)))
    col = np.clip(np.floor((x[:, 0] + 1) / 0.5), 0, 3).astype(int)
    row = np.clip(np.floor((x[:, 1] + 1) / 0.5), 0, 3).astype(int)
    assert np.array_equal(y, (col + row) % 2)
    assert len(set(zip(col.tolist(), row.tolist(), strict=True))) == 16  # all 16 cells are used


@pytest.mark.parametrize("k", [2, 3, 5, 10])
def test_rings_labels_are_ordered_by_radius_at_noise_0(k):
    x, y = pool(make_dataset(DataConfig(dataset="rings", noise=0.0, n_classes=k)))
    r = np.linalg.norm(x, axis=1)
    assert set(np.unique(y)) == set(range(k))
    for c in range(k - 1):
        assert r[y == c].max() < r[y == c + 1].min()


@pytest.mark.parametrize("k", range(2, 9))
def test_spirals_have_k_arms_and_each_point_lies_on_its_arm(k):
    x, y = pool(make_dataset(DataConfig(dataset="spirals", noise=0.0, n_classes=k)))
    assert set(np.unique(y)) == set(range(k))
    r = np.linalg.norm(x, axis=1)
    theta = np.arctan2(x[:, 1], x[:, 0])
    # angular distance from every point to every noiseless arm at the point's radius: the own arm is at 0
    arms = np.arange(k)
    diff = theta[:, None] - spiral_angle(r[:, None], arms[None, :], k)
    dist = np.abs(np.angle(np.exp(1j * diff)))
    assert np.all(dist[np.arange(len(y)), y] < 1e-3)
    assert np.array_equal(dist.argmin(axis=1), y)


def test_moons_lie_on_their_half_circles_at_noise_0():
    x, y = pool(make_dataset(DataConfig(dataset="moons", noise=0.0)))
    upper, lower = x[y == 0], x[y == 1]
    # sklearn's moons (centres (0, 0) and (1, 0.5), radius 1) shifted by (-0.5, -0.25) and scaled by 0.6
    assert np.allclose(np.linalg.norm(upper - [-0.3, -0.15], axis=1), 0.6, atol=1e-5)
    assert np.allclose(np.linalg.norm(lower - [0.3, 0.15], axis=1), 0.6, atol=1e-5)
    assert np.all(upper[:, 1] >= -0.15 - 1e-6) and np.all(lower[:, 1] <= 0.15 + 1e-6)


def test_blobs_are_separable_by_nearest_centre_at_noise_0():
    x, y = pool(make_dataset(DataConfig(dataset="blobs", noise=0.0, n_classes=6)))
    centres = np.stack([x[y == c].mean(axis=0) for c in range(6)])
    nearest = np.linalg.norm(x[:, None] - centres[None], axis=2).argmin(axis=1)
    assert np.array_equal(nearest, y)


def test_more_noise_breaks_more_of_the_rule():
    def violations(noise):
        x, y = pool(make_dataset(DataConfig(dataset="xor", noise=noise, n_samples=5000)))
        return np.mean(y != ((x[:, 0] > 0) ^ (x[:, 1] > 0)))

    v = [violations(n) for n in (0.0, 0.1, 0.5, 1.0)]
    assert v[0] == 0 and v[0] < v[1] < v[2] < v[3] < 0.5


def test_to_torch():
    ds = make_dataset(DataConfig(dataset="moons", n_samples=100))
    t = ds.to_torch("cpu")
    assert t.x_train.dtype == torch.float32 and t.y_train.dtype == torch.int64
    assert t.group_test.dtype == torch.int64 and t.x_test.device.type == "cpu"
    assert torch.equal(t.x_train, torch.from_numpy(ds.x_train))
    assert np.allclose(ds.to_original(ds.x_train), ds.x_train)  # identity scale for generated sets


def test_tokens_is_not_a_point_set():
    with pytest.raises(ValueError, match="make_token_stream"):
        make_dataset(DataConfig(dataset="tokens"))


# -- DataConfig validation -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [
        ("dataset", "mnist"),
        ("n_samples", 5),
        ("n_samples", 10**9),
        ("n_samples", 100.5),
        ("n_samples", True),
        ("noise", -0.1),
        ("noise", 1.5),
        ("noise", float("nan")),
        ("noise", "0.1"),
        ("n_classes", 1),
        ("n_classes", 11),
        ("test_fraction", 0.0),
        ("test_fraction", 0.6),
        ("seed", -1),
        ("seed", 2**40),
        ("seed", 1.5),
    ],
)
def test_config_errors_name_the_field_and_value(field, value):
    with pytest.raises(ValueError, match=rf"^{field}=") as e:
        DataConfig(**{field: value})
    assert "allowed" in str(e.value)


def test_spirals_allow_at_most_8_arms():
    DataConfig(dataset="blobs", n_classes=10)
    with pytest.raises(ValueError, match=r"n_classes=9 .*2 to 8 for dataset 'spirals'"):
        DataConfig(dataset="spirals", n_classes=9)


def test_config_round_trips_and_coerces_whole_floats():
    cfg = DataConfig(dataset="rings", n_samples=500.0, n_classes=4, noise=0)
    assert cfg.n_samples == 500 and isinstance(cfg.n_samples, int) and isinstance(cfg.noise, float)
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(seed=7).seed == 7
    with pytest.raises(ValueError, match="unknown DataConfig field"):
        DataConfig.from_dict({"datset": "xor"})
