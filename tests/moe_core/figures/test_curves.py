"""training_curves: panels per metric, missing metrics skipped, empty history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from figtools import all_text, arr, assert_valid

from moe_core.figures.curves import METRIC_LABELS, training_curves
from moe_core.figures.palette import UIREVISION, expert_colors

TRAINER_COLUMNS = ["step", "loss", "task_loss", "aux_loss", "z_loss", "accuracy", "load_cv", "max_vio", "dropped_frac",
                   "router_entropy", "usage_entropy", "step_ms", "lr"]


def _history(n=30, E=4):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({c: rng.random(n) for c in TRAINER_COLUMNS})
    df["step"] = np.arange(1, n + 1)
    for e in range(E):
        df[f"load_{e}"] = rng.random(n) * 100
    return df


def test_one_panel_per_metric_sharing_step():
    df = _history()
    fig = training_curves(df, ["loss", "max_vio", "dropped_frac"])
    assert [t.name for t in fig.data] == ["loss (task + aux)", "MaxVio", "dropped fraction"]
    assert [t.yaxis for t in fig.data] == ["y", "y2", "y3"]
    np.testing.assert_array_equal(arr(fig.data[1].y), df["max_vio"])
    np.testing.assert_array_equal(arr(fig.data[0].x), df["step"])
    assert fig.layout.xaxis2.matches == "x" and fig.layout.xaxis3.title.text == "step"
    assert {"MaxVio", "dropped fraction"} <= {a.text for a in fig.layout.annotations}
    assert fig.layout.uirevision == UIREVISION
    assert_valid(fig)


def test_missing_metrics_are_skipped():
    fig = training_curves(_history(), ["accuracy", "mse", "no_such_metric", "load_cv"])
    assert [t.name for t in fig.data] == ["accuracy", "load CV"]


def test_single_metric_is_one_panel_with_readable_title():
    fig = training_curves(_history(), ["router_entropy"])
    assert len(fig.data) == 1 and fig.data[0].yaxis == "y"
    assert "router entropy (nats)" in fig.layout.title.text
    assert fig.layout.yaxis.title.text == "router entropy (nats)"
    assert any("ln 4" in a.text for a in fig.layout.annotations)  # the uniform ceiling, E from the load columns


@pytest.mark.parametrize("df", [pd.DataFrame(), pd.DataFrame(columns=["step", "loss"]), None])
def test_empty_history_says_no_steps_yet(df):
    fig = training_curves(df, ["loss"])
    assert len(fig.data) == 0 and "No steps yet" in all_text(fig)
    assert_valid(fig)


def test_no_recorded_metric_gives_a_message():
    fig = training_curves(_history(), ["mse"])
    assert len(fig.data) == 0 and "None of the chosen metrics" in all_text(fig)


def test_load_draws_one_line_per_expert_in_its_colour():
    fig = training_curves(_history(E=5), ["load"])
    assert [t.name for t in fig.data] == [f"E{e}" for e in range(5)]
    assert [t.line.color for t in fig.data] == expert_colors(5)


def test_log_y_and_labels_for_the_picker():
    fig = training_curves(_history(), ["loss", "lr"], log_y=True)
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis2.type == "log"
    assert {"max_vio", "load_cv", "dropped_frac", "router_entropy", "load"} <= set(METRIC_LABELS)
    assert set(TRAINER_COLUMNS) - {"step"} <= set(METRIC_LABELS)
    assert METRIC_LABELS["max_vio"] == "MaxVio" and METRIC_LABELS["router_entropy"] == "router entropy (nats)"


def test_long_histories_are_thinned():
    fig = training_curves(_history(n=10_000), ["loss"])
    assert len(arr(fig.data[0].x)) <= 4000


def test_log_axes_label_every_tick_with_its_value_and_skip_panels_of_zeros():
    import pandas as pd

    h = pd.DataFrame({"step": [1, 2, 3], "max_vio": [0.9, 0.5, 0.3], "dropped_frac": [0.0, 0.0, 0.0]})
    fig = training_curves(h, ["max_vio", "dropped_frac"], log_y=True)
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.tickformat  # 0.3 reads 0.3, not "3"
    assert fig.layout.yaxis2.type == "linear"  # nothing above 0: a log axis would be empty


@pytest.mark.parametrize("log_y", [False, True])
def test_the_uniform_entropy_line_sits_at_ln_e_on_linear_and_log_axes(log_y):
    """On a log axis Plotly reads an annotation's y as log10 of the value (a shape's y as the value): the label must
    be given as log10(ln E) there, or it lands at 10^(ln E) and stretches the panel to hundreds."""
    E = 8
    fig = training_curves(_history(E=E), ["router_entropy"], log_y=log_y)
    assert fig.layout.yaxis.type == ("log" if log_y else "linear")
    top = np.log(E)
    (line,) = [s for s in fig.layout.shapes if s.type == "line"]
    assert line.y0 == pytest.approx(top) and line.y1 == pytest.approx(top)
    (label,) = [a for a in fig.layout.annotations if "uniform" in a.text]
    assert label.y == pytest.approx(np.log10(top) if log_y else top) and f"{top:.2f}" in label.text


def test_log_panels_label_1_2_5_while_they_fit_and_powers_of_ten_when_not():
    h = _history()
    h["task_loss"] = np.geomspace(1.0, 5e-4, len(h))  # 3.3 decades
    h["aux_loss"] = np.linspace(0.3, 0.9, len(h))  # half a decade: 0.3, 0.5 fit
    many = ["task_loss", "aux_loss", "loss", "max_vio", "router_entropy"]  # five short panels
    fig = training_curves(h, many, log_y=True)
    assert fig.layout.yaxis.dtick == 1, "3.3 decades of 1-2-5 labels would overlap in a short panel"
    assert fig.layout.yaxis2.dtick == "D2", "a panel within one decade keeps labels between powers of ten"
    alone = training_curves(h, ["task_loss"], log_y=True)
    assert alone.layout.yaxis.dtick == "D2", "a single tall panel has room for them"


@pytest.mark.parametrize("n", [1, 30, 1234])
def test_the_subtitle_says_the_step_the_curves_reach_also_when_thinned(n):
    fig = training_curves(_history(n), ["loss", "max_vio"])
    assert fig.layout.title.subtitle.text == f"up to step {n:,}"
    assert training_curves(_history(n), ["loss"]).layout.title.subtitle.text == f"up to step {n:,}"


def test_a_panel_of_zeros_starts_at_0_and_few_steps_are_labelled_whole():
    df = _history(3)
    df["dropped_frac"] = 0.0
    fig = training_curves(df, ["loss", "dropped_frac"])
    assert fig.layout.yaxis2.rangemode == "nonnegative"  # 0..1, not -1..1
    assert (fig.layout.xaxis.dtick, fig.layout.xaxis2.dtick) == (1, 1)  # steps 1, 2, 3: no 1.5
    assert training_curves(_history(30), ["loss"]).layout.xaxis.dtick is None  # Plotly's own ticks beyond that
