"""Routing map: which expert the router picks at each point of the input plane (or along the line, in 1-D).

The 2-D map is an RGBA image computed in numpy (go.Image, one pixel per grid cell): the colour is the expert's,
the opacity the router's confidence, rescaled so that p = 1/E (no preference) is faint and p = 1 is full.
An invisible heatmap on top carries the hover text and the shown expert as integer z values.
1-D inputs get the data and the prediction curve over faint expert bands, and a strip of the router's choice.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from moe_core.figures.common import entropy_nats, get_layer, grid_axes, group_name, make_figure, message_figure
from moe_core.figures.palette import (
    NEUTRAL_COLOR,
    class_colors,
    colorscale,
    expert_colors,
    expert_name,
    hex_to_rgb,
    join_parts,
    layer_label,
    layout_dict,
    with_alpha,
)
from moe_core.training.snapshot import LayerView, Snapshot

MODES = ("top1", "second", "entropy", "prediction")
MIN_ALPHA = 0.12  # opacity of a cell where the router has no preference (the colour still shows)
MAX_POINTS = 1500  # test points drawn at most (evenly thinned above), to keep the browser fast
MAX_LEGEND_EXPERTS = 16  # above this, the legend lists only the experts visible on the map
MAX_LEGEND_ABOVE_BAR = 5  # classes that fit in the legend above the entropy colour bar; more go below the plot
CLASS_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "cross", "x", "star", "hexagon", "triangle-down",
                 "pentagon")
ENTROPY_SCALE = colorscale("Viridis")
VALUE_SCALE = colorscale("RdBu_r")
POINT_SCALE = colorscale("Greys")
TRANSPARENT_SCALE = [[0.0, "rgba(0,0,0,0)"], [1.0, "rgba(0,0,0,0)"]]
HEIGHT = 460


def confidence_alpha(p: np.ndarray, n_experts: int) -> np.ndarray:
    """Opacity in [MIN_ALPHA, 1] from a top-1 probability: 1/E -> MIN_ALPHA, 1 -> 1, linear in between."""
    p = np.asarray(p, dtype=np.float64)
    if n_experts <= 1:
        return np.ones_like(p)
    floor = 1.0 / n_experts
    return MIN_ALPHA + (1.0 - MIN_ALPHA) * np.clip((p - floor) / (1.0 - floor), 0.0, 1.0)


def expert_rgba(expert: np.ndarray, alpha: np.ndarray, n_experts: int) -> np.ndarray:
    """(..., 4) uint8 RGBA: each cell's expert colour with opacity alpha (0..1, stored as 0..255)."""
    lut = np.array([hex_to_rgb(c) for c in expert_colors(n_experts)], dtype=np.uint8)  # (E, 3)
    expert = np.asarray(expert)
    out = np.empty((*expert.shape, 4), dtype=np.uint8)
    out[..., :3] = lut[expert]
    out[..., 3] = np.round(np.clip(alpha, 0.0, 1.0) * 255).astype(np.uint8)
    return out


def ranked(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(top1, p1, top2, p2) over the last axis; top1 = argmax (lowest index on ties); top2 = -1 when E = 1."""
    probs = np.asarray(probs, dtype=np.float64)
    top1 = probs.argmax(-1)
    p1 = np.take_along_axis(probs, top1[..., None], -1)[..., 0]
    if probs.shape[-1] < 2:
        return top1, p1, np.full_like(top1, -1), np.zeros_like(p1)
    rest = probs.copy()
    np.put_along_axis(rest, top1[..., None], -np.inf, -1)
    top2 = rest.argmax(-1)
    return top1, p1, top2, np.take_along_axis(probs, top2[..., None], -1)[..., 0]


def shown_experts(mode: str, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(expert per cell, RGBA per cell) of the "top1" or "second" mode.

    top1: the argmax expert, opacity from its probability (confidence_alpha).
    second: the 2nd-ranked expert, full colour where it nearly ties with the 1st (p2 / (p1 + p2) -> 1/2),
    faint where the 1st dominates, so the contested borders between experts light up.
    """
    E = probs.shape[-1]
    top1, p1, top2, p2 = ranked(probs)
    if mode == "top1":
        return top1, expert_rgba(top1, confidence_alpha(p1, E), E)
    share = np.divide(p2, p1 + p2, out=np.zeros_like(p2), where=(p1 + p2) > 0)
    return top2, expert_rgba(top2, MIN_ALPHA + (1.0 - MIN_ALPHA) * np.clip(2.0 * share, 0.0, 1.0), E)


def _customdata(probs: np.ndarray) -> np.ndarray:
    top1, p1, top2, p2 = ranked(probs)
    return np.stack([top1, p1, top2, p2, entropy_nats(probs)], axis=-1).astype(np.float32)


def _hover(E: int, one_d: bool) -> str:
    lines = ["x = %{x:.2f}" if one_d else "x₁ = %{x:.2f}, x₂ = %{y:.2f}",
             "top-1: E%{customdata[0]} (p = %{customdata[1]:.2f})"]
    if E >= 2:
        lines.append("2nd: E%{customdata[2]} (p = %{customdata[3]:.2f})")
    lines.append("gate entropy %{customdata[4]:.2f} nats")
    return "<br>".join(lines) + "<extra></extra>"


def expert_legend(E: int, present: np.ndarray, xaxis: str = "x", yaxis: str = "y") -> list[dict]:
    """Invisible square markers, one per expert, so the legend explains the colours (only the experts
    present on the map when E > MAX_LEGEND_EXPERTS)."""
    colors = expert_colors(E)
    shown = range(E) if E <= MAX_LEGEND_EXPERTS else np.unique(present[present >= 0])
    title = "experts" if E <= MAX_LEGEND_EXPERTS else "experts on the map"
    return [dict(type="scatter", x=[None], y=[None], mode="markers", name=expert_name(e), legendgroup="experts",
                 legendgrouptitle=dict(text=title) if i == 0 else None, hoverinfo="skip", xaxis=xaxis, yaxis=yaxis,
                 marker=dict(symbol="square", size=14, color=colors[int(e)]))
            for i, e in enumerate(shown)]


def _thin(n: int) -> np.ndarray:
    return np.arange(n) if n <= MAX_POINTS else np.linspace(0, n - 1, MAX_POINTS).round().astype(int)


def _entropy_colorbar(E: int) -> tuple[float, dict]:
    """(zmax, colorbar) of the entropy scale; the bar fills the lower half of the right side, under the legend."""
    zmax = math.log(E) if E > 1 else 1.0
    text = ["0 sure", f"{zmax / 2:.2f}", f"{zmax:.2f} = ln {E}" if E > 1 else "1"]
    return zmax, dict(title=dict(text="entropy (nats)", side="right"), tickvals=[0.0, zmax / 2, zmax],
                      ticktext=text, thickness=14, len=0.55, y=0.0, yanchor="bottom")


def _class_points(snap: Snapshot, idx: np.ndarray, prediction_mode: bool) -> list[dict]:
    """Test points, one trace per class: a symbol per class, filled with a grey level (map modes, so they never
    compete with the expert colours) or with the class colour (prediction mode: misclassified points stand out)."""
    x, y = snap.points_x[idx], np.asarray(snap.points_y[idx]).astype(int)
    n = max(len(snap.group_names), int(y.max()) + 1 if len(y) else 1)
    colors = class_colors(n)
    traces = []
    for i, c in enumerate(np.unique(y).tolist()):
        m = y == c
        level = c / (n - 1) if n > 1 else 0.0
        if prediction_mode:
            fill, edge = colors[c], "#222"
        else:
            v = round(level * 255)
            fill, edge = f"rgb({v},{v},{v})", ("#FFF" if level < 0.5 else "#222")
        name = group_name(snap, c)
        traces.append(dict(
            type="scatter", x=x[m, 0], y=x[m, 1], mode="markers", name=name, legendgroup="points",
            legendgrouptitle=dict(text="test points (true class)") if i == 0 else None,
            marker=dict(symbol=CLASS_SYMBOLS[c % len(CLASS_SYMBOLS)], size=7, color=fill,
                        line=dict(width=1, color=edge)),
            hovertemplate=f"{name}<br>x₁ = %{{x:.2f}}, x₂ = %{{y:.2f}}<extra>test point</extra>"))
    return traces


def _value_points(snap: Snapshot, idx: np.ndarray, scale: str, lim: float, with_bar: bool) -> dict:
    """Regression test points coloured by their target."""
    x, y = snap.points_x[idx], np.asarray(snap.points_y[idx], dtype=np.float64)
    bar = dict(title=dict(text="target y", side="top"), orientation="h", y=-0.22, yanchor="top", len=0.5,
               thickness=12)
    return dict(type="scatter", x=x[:, 0], y=x[:, 1], mode="markers", name="test points (colour = target)",
                marker=dict(size=7, color=y, colorscale=scale, cmin=-lim, cmax=lim, showscale=with_bar,
                            colorbar=bar if with_bar else None, line=dict(width=1, color="#222")),
                hovertemplate="target %{marker.color:.2f}<br>x₁ = %{x:.2f}, x₂ = %{y:.2f}<extra>test point</extra>")


def _background(snap: Snapshot, probs: np.ndarray, mode: str, gx, gy, lim: float) -> list[dict]:
    """The cell layer of the 2-D map, plus its legend entries."""
    E = probs.shape[-1]
    dx = float(gx[1] - gx[0]) if len(gx) > 1 else 1.0
    dy = float(gy[1] - gy[0]) if len(gy) > 1 else 1.0
    if mode in ("top1", "second"):
        expert, rgba = shown_experts(mode, probs)
        return [
            dict(type="image", z=rgba, colormodel="rgba", zmin=[0, 0, 0, 0], zmax=[255, 255, 255, 255], x0=gx[0],
                 dx=dx, y0=gy[0], dy=dy, hoverinfo="skip", name="routing"),
            dict(type="heatmap", x=gx, y=gy, z=expert, customdata=_customdata(probs), colorscale=TRANSPARENT_SCALE,
                 showscale=False, hovertemplate=_hover(E, False), name="router choice", showlegend=False),
            *expert_legend(E, expert),
        ]
    if mode == "entropy":
        zmax, bar = _entropy_colorbar(E)
        return [dict(type="heatmap", x=gx, y=gy, z=entropy_nats(probs), customdata=_customdata(probs),
                     colorscale=ENTROPY_SCALE, zmin=0.0, zmax=zmax, colorbar=bar, hovertemplate=_hover(E, False),
                     name="gate entropy", showlegend=False)]
    if snap.task == "regression":
        return [dict(type="heatmap", x=gx, y=gy, z=snap.grid_prediction, colorscale=VALUE_SCALE, zmin=-lim, zmax=lim,
                     name="prediction", showlegend=False,
                     colorbar=dict(title=dict(text="predicted y", side="right"), thickness=14, len=0.7, y=0.0,
                                   yanchor="bottom"),
                     hovertemplate="x₁ = %{x:.2f}, x₂ = %{y:.2f}<br>prediction %{z:.2f}<extra></extra>")]
    pred = np.asarray(snap.grid_prediction, dtype=int)
    n = max(len(snap.group_names), int(pred.max()) + 1)
    colors = class_colors(n)
    scale = [[s, colors[c]] for c in range(n) for s in (c / n, (c + 1) / n)]
    return [dict(type="heatmap", x=gx, y=gy, z=pred, colorscale=scale, zmin=-0.5, zmax=n - 0.5, showscale=False,
                 name="predicted class", showlegend=False,
                 hovertemplate="x₁ = %{x:.2f}, x₂ = %{y:.2f}<br>predicted class %{z}<extra></extra>"),
            *[dict(type="scatter", x=[None], y=[None], mode="markers", name=f"predicted {group_name(snap, c)}",
                   legendgroup="pred", legendgrouptitle=dict(text="background") if c == 0 else None,
                   marker=dict(symbol="square", size=14, color=colors[c]), hoverinfo="skip") for c in range(n)]]


_TITLES_2D = {
    "top1": ("Which expert the router picks across the plane",
             "colour = top-1 expert · pale = unsure (p ≈ 1/E), full = sure (p = 1)"),
    "second": ("The router's second choice across the plane",
               "colour = 2nd-ranked expert · full colour = nearly tied with the 1st (a contested border)"),
    "entropy": ("How unsure the router is across the plane",
                "gate entropy: 0 = one expert takes all, ln E = every expert equally likely"),
    "prediction": ("What the model predicts across the plane", "background = prediction"),
}


def _plane(snap: Snapshot, view: LayerView, mode: str, show_points: bool, where: str) -> go.Figure:
    gx, gy = np.asarray(snap.grid_x, dtype=np.float64), np.asarray(snap.grid_y, dtype=np.float64)
    regression = snap.task == "regression"
    lim = 1.0
    if regression and snap.grid_prediction is not None:
        values = [np.abs(snap.grid_prediction).max()]
        if snap.points_y is not None and len(snap.points_y):
            values.append(np.abs(snap.points_y).max())
        lim = float(max(*values, 1e-6))
    data = _background(snap, map_scores(view), mode, gx, gy, lim)
    has_points = bool(show_points and snap.points_x is not None and snap.points_y is not None and len(snap.points_x))
    notes = []
    if has_points:
        idx = _thin(len(snap.points_x))
        if regression:
            points = _value_points(snap, idx, VALUE_SCALE if mode == "prediction" else POINT_SCALE, lim,
                                   with_bar=mode != "prediction")
            points["showlegend"] = mode != "entropy"  # the legend would sit on the points' colour bar
            data.append(points)
        else:
            data.extend(_class_points(snap, idx, mode == "prediction"))
            if mode == "prediction":
                notes.append("markers = true class")
        if len(snap.points_x) > MAX_POINTS:
            notes.append(f"{MAX_POINTS} of {len(snap.points_x)} test points shown")
    if mode == "second" and snap.top_k == 1:
        notes.append("with k = 1 the 2nd choice is not used")
    title, sub = _TITLES_2D[mode]
    layout = layout_dict(title, HEIGHT, join_parts(sub, *notes, where))
    dx = float(gx[1] - gx[0]) if len(gx) > 1 else 1.0
    dy = float(gy[1] - gy[0]) if len(gy) > 1 else 1.0
    layout["xaxis"] = dict(title=dict(text="x₁"), range=[gx[0] - dx / 2, gx[-1] + dx / 2], constrain="domain",
                           showgrid=False, zeroline=False)
    layout["yaxis"] = dict(title=dict(text="x₂"), range=[gy[0] - dy / 2, gy[-1] + dy / 2], autorange=False,
                           scaleanchor="x", scaleratio=1, constrain="domain", showgrid=False, zeroline=False)
    if mode == "entropy" and not regression and len(snap.group_names) > MAX_LEGEND_ABOVE_BAR:
        layout["legend"].update(orientation="h", x=0.0, xanchor="left", y=-0.2, yanchor="top")  # clear of the bar
        layout["margin"]["b"] = 110
    if has_points and regression and mode != "prediction":
        layout["margin"]["b"] = 130  # room for the horizontal colour bar of the targets
    return make_figure(data, layout)


def runs(values: np.ndarray) -> list[tuple[int, int, int]]:
    """Contiguous runs (start, stop, value) along a 1-D integer array."""
    values = np.asarray(values)
    if len(values) == 0:
        return []
    cuts = np.flatnonzero(np.diff(values)) + 1
    starts = np.concatenate([[0], cuts]).astype(int)
    stops = np.concatenate([cuts, [len(values)]]).astype(int)
    return [(int(a), int(b), int(values[a])) for a, b in zip(starts, stops, strict=True)]


def map_scores(view: LayerView) -> np.ndarray:
    """What decides a cell's expert: the router's probabilities, or for sigmoid_bias the scores after the
    balancing bias (s + b, normalized), since the bias changes where tokens actually go."""
    if view.grid_selection is None:
        return view.grid_probs
    scores = np.clip(np.asarray(view.grid_selection, dtype=np.float64), 0.0, None)
    return scores / np.maximum(scores.sum(-1, keepdims=True), 1e-12)


def _strip(snap: Snapshot, view: LayerView, mode: str, show_points: bool, where: str) -> go.Figure:
    """1-D inputs: data and prediction curve over faint bands of the top-1 expert, and a strip of the router's
    choice (top-1 or 2nd expert, or the gate entropy) under them, sharing x."""
    gx = np.asarray(snap.grid_x, dtype=np.float64)
    probs = map_scores(view)[0]  # (Gx, E)
    E = probs.shape[-1]
    dx = float(gx[1] - gx[0]) if len(gx) > 1 else 1.0
    colors = expert_colors(E)
    top1 = probs.argmax(-1)
    data: list[dict] = []
    if show_points and snap.points_x is not None and snap.points_y is not None and len(snap.points_x):
        idx = _thin(len(snap.points_x))
        data.append(dict(type="scatter", x=snap.points_x[idx, 0], y=snap.points_y[idx], mode="markers",
                         name="test points", marker=dict(size=5, color=NEUTRAL_COLOR, opacity=0.6),
                         hovertemplate="x = %{x:.2f}, target %{y:.2f}<extra>test point</extra>"))
    if snap.grid_prediction is not None:
        data.append(dict(type="scatter", x=gx, y=np.asarray(snap.grid_prediction)[0], mode="lines",
                         name="model prediction", line=dict(color="#111", width=3),
                         hovertemplate="x = %{x:.2f}, prediction %{y:.2f}<extra></extra>"))
    strip = dict(type="bar", x=gx, y=np.ones(len(gx)), width=dx, customdata=_customdata(probs), xaxis="x2",
                 yaxis="y2", hovertemplate=_hover(E, True), showlegend=False, name="router choice")
    annotations = []
    if mode == "entropy":
        zmax, bar = _entropy_colorbar(E)
        bar.update(len=0.3)
        strip["marker"] = dict(color=entropy_nats(probs), colorscale=ENTROPY_SCALE, cmin=0.0, cmax=zmax, colorbar=bar,
                               line=dict(width=0))
        strip_title = "entropy"
        data.extend(expert_legend(E, top1))  # the bands above are still the top-1 experts
    else:
        expert, rgba = shown_experts("second" if mode == "second" else "top1", probs)
        strip["marker"] = dict(color=[f"rgba({r},{g},{b},{a / 255:.3f})" for r, g, b, a in rgba.tolist()],
                               line=dict(width=0))
        strip_title = "2nd" if mode == "second" else "expert"
        annotations = [dict(x=(gx[a] + gx[b - 1]) / 2, y=0.5, xref="x2", yref="y2", text=expert_name(e),
                            showarrow=False, font=dict(size=14, color="#111"), bgcolor="rgba(255,255,255,0.75)")
                       for a, b, e in runs(expert) if b - a >= 3]
        data.extend(expert_legend(E, expert))
    data.append(strip)
    titles = {"top1": "Which expert owns which part of the input", "second": "The router's second choice along x",
              "entropy": "How unsure the router is along x", "prediction": "Model prediction and the experts behind it"}
    sub = "strip = 2nd-ranked expert" if mode == "second" else "bands and strip = top-1 expert (pale = unsure)"
    if mode == "entropy":
        sub = "bands = top-1 expert · strip = gate entropy (0 = sure, ln E = uniform)"
    layout = layout_dict(titles[mode], HEIGHT, join_parts(sub, where))
    layout.update(grid_axes(2, 1, row_heights=[0.78, 0.22], vspace=0.05, shared_x=True))
    xr = [gx[0] - dx / 2, gx[-1] + dx / 2]
    layout["xaxis"].update(range=xr, showgrid=False)
    layout["xaxis2"].update(range=xr, showgrid=False, title=dict(text="x"))
    layout["yaxis"].update(title=dict(text="target y" if snap.task == "regression" else "label"))
    layout["yaxis2"].update(title=dict(text=strip_title), range=[0, 1], showticklabels=False, showgrid=False,
                            fixedrange=True)
    layout["shapes"] = [dict(type="rect", xref="x", yref="y domain", x0=gx[a] - dx / 2, x1=gx[b - 1] + dx / 2, y0=0,
                             y1=1, fillcolor=with_alpha(colors[e], 0.14), line=dict(width=0), layer="below")
                        for a, b, e in runs(top1)]
    layout["annotations"] = annotations
    layout["bargap"] = 0
    return make_figure(data, layout)


def routing_map(snap: Snapshot, layer: int = 0, mode: str = "top1", show_points: bool = True) -> go.Figure:
    """The input plane coloured by the router's decision at one MoE layer.

    mode: "top1" (the argmax expert of grid_probs, opacity = confidence), "second" (the 2nd-ranked expert),
    "entropy" (gate entropy in nats, 0..ln E) or "prediction" (the model's predicted class / value).
    1-D inputs (len(snap.grid_y) == 1) give the data and prediction curve over expert bands, plus a strip.
    A language snapshot (no grid) gives an explanatory message figure.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is out of range: allowed one of {', '.join(MODES)}")
    view = get_layer(snap, layer)
    if view.grid_probs is None or snap.grid_x is None or snap.grid_y is None:
        return message_figure("Routing map", "This task has no input plane to map:<br>a language model routes "
                                             "characters; see the coloured probe text instead.")
    if mode == "second" and view.grid_probs.shape[-1] < 2:
        return message_figure("The router's second choice", "With a single expert there is no second choice.")
    if mode == "prediction" and snap.grid_prediction is None:
        return message_figure("What the model predicts", "This snapshot has no predictions over the plane.")
    where = join_parts(layer_label(int(layer), len(snap.layers)), f"step {snap.step}")
    if len(snap.grid_y) == 1:
        return _strip(snap, view, mode, show_points, where)
    return _plane(snap, view, mode, show_points, where)
