"""Training curves: one panel per chosen metric of Trainer.history, sharing the step axis."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from moe_core.figures.common import axis_id, grid_axes, make_figure, message_figure, panel_title
from moe_core.figures.palette import expert_colors, expert_name, layout_dict

# readable names of the history columns, for the panels and for the UI's metric picker
METRIC_LABELS: dict[str, str] = {
    "loss": "loss (task + aux)",
    "task_loss": "task loss",
    "aux_loss": "auxiliary loss",
    "z_loss": "router z-loss",
    "accuracy": "accuracy",
    "mse": "mean squared error",
    "load_cv": "load CV",
    "max_vio": "MaxVio",
    "dropped_frac": "dropped fraction",
    "router_entropy": "router entropy (nats)",
    "usage_entropy": "usage entropy (nats)",
    "load": "tokens per expert",  # every load_e column, one line per expert in its colour
    "step_ms": "ms per step",
    "lr": "learning rate",
}
LINE_COLOR = "#333333"  # scalar metrics stay grey: colour means "expert" everywhere in the app
MAX_ROWS = 500  # longer histories are thinned evenly: a panel is ~500 px wide, more points only cost the browser
PANEL_PX = 170  # height per panel when several are stacked
MIN_PANEL_PX = 120  # per panel beyond four: the figure grows instead of squashing the panels
ENTROPY_METRICS = ("router_entropy", "usage_entropy")
FEW_STEPS = 10  # a history spanning fewer steps labels each step on the x axis


def metric_label(name: str) -> str:
    """The readable name of a history column (the column itself when unknown)."""
    return METRIC_LABELS.get(name, name)


def load_columns(history: pd.DataFrame) -> list[str]:
    """The load_0 .. load_{E-1} columns, in expert order."""
    cols = [c for c in history.columns if c.startswith("load_") and c[5:].isdigit()]
    return sorted(cols, key=lambda c: int(c[5:]))


def _present(history: pd.DataFrame, metrics: list[str]) -> list[str]:
    out = []
    for m in metrics:
        if m in out:
            continue
        if (m == "load" and load_columns(history)) or (m != "load" and m in history.columns):
            out.append(m)
    return out


def _values(history: pd.DataFrame, metric: str) -> np.ndarray:
    """The panel's values: the metric's column, or every expert's load column for "load"."""
    return history[load_columns(history) if metric == "load" else [metric]].to_numpy()


def _has_positive(history: pd.DataFrame, metric: str) -> bool:
    return bool((_values(history, metric) > 0).any())


def _log_axis(log_y: bool, history: pd.DataFrame, metric: str) -> bool:
    """A log axis, unless the panel has no value above 0 (a log axis of nothing but zeros would be empty)."""
    return log_y and _has_positive(history, metric)


def _decades(history: pd.DataFrame, metric: str) -> float:
    """How many powers of ten the panel's positive values span."""
    values = _values(history, metric)
    positive = values[values > 0]
    return float(np.log10(positive.max() / positive.min())) if positive.size else 0.0


LOG_LABEL_PX = 28  # vertical room one log-axis label needs


def training_curves(history: pd.DataFrame, metrics: list[str], log_y: bool = False) -> go.Figure:
    """One panel per metric (a single panel for one metric), all sharing x = step.

    metrics: history column names (see METRIC_LABELS), plus "load" for one line per expert; names missing from
    the frame are skipped. An empty frame gives an empty figure saying "no steps yet". log_y: log axes, except
    for a panel with no value above 0 (dropped fraction while nothing is dropped), which stays linear.
    """
    title = "Training curves"
    if history is None or len(history) == 0:
        return message_figure(title, "No steps yet: press Play or Step to start training.")
    shown = _present(history, list(metrics))
    if not shown:
        return message_figure(title, "None of the chosen metrics has been recorded yet.")
    if len(history) > MAX_ROWS:
        history = history.iloc[np.linspace(0, len(history) - 1, MAX_ROWS).round().astype(int)]
    x = history["step"].to_numpy() if "step" in history.columns else np.arange(len(history))
    n = len(shown)
    panel_px = PANEL_PX if n <= 4 else MIN_PANEL_PX
    height = 360 if n == 1 else 110 + panel_px * n  # grows: panels stay readable
    mode = "lines" if len(history) > 1 else "markers"  # one step is a point, not an empty chart
    vspace = min(0.12, 45.0 / height)
    axes = grid_axes(n, 1, vspace=vspace, shared_x=True)
    data, annotations, shapes = [], [], []
    n_experts = len(load_columns(history))
    for i, m in enumerate(shown):
        xa, ya = f"x{axis_id(i)}", f"y{axis_id(i)}"
        if m == "load":
            cols = load_columns(history)
            colors = expert_colors(min(len(cols), 256))
            for e, c in enumerate(cols[:256]):
                data.append(dict(type="scatter", x=x, y=history[c].to_numpy(), mode=mode, name=expert_name(e),
                                 line=dict(color=colors[e], width=1.8), xaxis=xa, yaxis=ya, legendgroup="experts",
                                 legendgrouptitle=dict(text="tokens per expert") if e == 0 else None,
                                 hovertemplate=f"{expert_name(e)}: %{{y:.1f}} tokens at step %{{x}}<extra></extra>"))
        else:
            data.append(dict(type="scatter", x=x, y=history[m].to_numpy(), mode=mode, name=metric_label(m),
                             line=dict(color=LINE_COLOR, width=2), xaxis=xa, yaxis=ya, showlegend=False,
                             hovertemplate=f"{metric_label(m)}: %{{y:.4g}} at step %{{x}}<extra></extra>"))
            if m in ENTROPY_METRICS and n_experts > 1:
                top = math.log(n_experts)
                # On a log axis Plotly places an annotation in log10 units (a shape in data units): ln 8 = 2.08
                # as an annotation's y would sit at 10^2.08 = 120 and stretch the panel to hundreds
                label_y = math.log10(top) if _log_axis(log_y, history, m) else top
                shapes.append(dict(type="line", xref=f"{xa} domain", x0=0, x1=1, yref=ya, y0=top, y1=top,
                                   line=dict(color="#888", width=1.5, dash="dot")))
                annotations.append(dict(text=f"ln {n_experts} = {top:.2f} (uniform)", xref=f"{xa} domain", x=1.0,
                                        xanchor="right", yref=ya, y=label_y, yanchor="bottom", showarrow=False,
                                        font=dict(size=13, color="#666")))
        if n > 1:
            annotations.append(panel_title(metric_label(m), axes[f"xaxis{axis_id(i)}"], axes[f"yaxis{axis_id(i)}"]))
    # the step it reaches, as every view says the step it shows (views redraw at their own pace while training)
    layout = layout_dict(title if n > 1 else f"Training curve: {metric_label(shown[0])}", height,
                         f"up to step {int(x[-1]):,}")
    layout.update(axes)
    for i, m in enumerate(shown):
        ya = layout[f"yaxis{axis_id(i)}"]
        # every metric is >= 0: a panel of zeros (nothing dropped yet) reads 0..1, not -1..1
        ya.update(type="linear", automargin=True, rangemode="nonnegative")
        if _log_axis(log_y, history, m):
            # every label the value itself: Plotly otherwise labels the ticks between powers of ten with one digit
            # (0.3 read as "3"). 1, 2 and 5 in each decade while they fit the panel; a panel whose values span
            # more decades than that gets one label per power of ten, or the labels overlap
            fits = 3 * _decades(history, m) * LOG_LABEL_PX <= (height if n == 1 else panel_px)
            ya.update(type="log", dtick="D2" if fits else 1, tickformat=".2~g")
        if n == 1:
            ya["title"] = dict(text=metric_label(m))
    layout[f"xaxis{axis_id(n - 1)}"]["title"] = dict(text="step")
    if x[-1] - x[0] < FEW_STEPS:  # whole steps only: Plotly would label a step 1.5
        for i in range(n):
            layout[f"xaxis{axis_id(i)}"].update(tick0=0, dtick=1)
    layout.update(annotations=annotations, shapes=shapes, hovermode="closest")
    return make_figure(data, layout)
