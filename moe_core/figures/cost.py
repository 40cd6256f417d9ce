"""Sparsity cost: what an MoE layer stores (parameters) against what it computes per token (FLOPs), and time."""

from __future__ import annotations

import math

import plotly.graph_objects as go

from moe_core.figures.common import PANEL_TITLE_PX, grid_axes, make_figure, panel_title
from moe_core.figures.palette import join_parts, layout_dict
from moe_core.training.snapshot import Snapshot

HEIGHT = 420
MOE_COLOR = "#0072B2"  # this model
DENSE_COLOR = "#9E9E9E"  # the dense comparisons


def human(n: float) -> str:
    """12_345_678 -> "12.3M", 49_664 -> "49.7k", 12 -> "12"."""
    if n is None or not math.isfinite(n):
        return "?"
    for size, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{n:.3g}"


def _bars(labels: list[str], values: list[float], colors: list[str], axis: str, hover_unit: str) -> dict:
    return dict(type="bar", x=labels, y=values, marker=dict(color=colors), text=[human(v) for v in values],
                textposition="outside", cliponaxis=False, xaxis=f"x{axis}", yaxis=f"y{axis}", showlegend=False,
                name=hover_unit, hovertemplate=f"%{{x}}: %{{y:,.0f}} {hover_unit}<extra></extra>")


def sparsity_cost(snap: Snapshot) -> go.Figure:
    """1 x 3 panels for one MoE layer: parameters stored vs active per token; forward FLOPs per token of the MoE
    vs a dense MLP of the same active width (hidden k·h, "same width") and one with as many parameters as the
    whole layer ("same size"); and the measured ms of a training step, the median of the last 10 (snap.step_ms)."""
    params, flops = snap.parameters or {}, snap.flops or {}
    nan = float("nan")
    total, active = float(params.get("total", nan)), float(params.get("active", nan))
    moe_flops, dense_flops = float(flops.get("total", nan)), float(flops.get("dense_equivalent", nan))
    same_params = 2.0 * total  # a dense layer touching every parameter: one multiply-add (2 FLOPs) per weight
    data = [
        _bars(["stored", "active<br>per token"], [total, active], [DENSE_COLOR, MOE_COLOR], "", "parameters"),
        _bars(["this MoE", "dense,<br>same<br>width", "dense,<br>same<br>size"],  # 1/3 of a narrow panel
              [moe_flops, dense_flops, same_params], [MOE_COLOR, DENSE_COLOR, DENSE_COLOR], "2",
              "FLOPs per token (forward)"),
        _bars(["a step"], [float(snap.step_ms)], [MOE_COLOR], "3", "ms"),
    ]
    data[2].update(text=[f"{snap.step_ms:.1f} ms" if snap.step_ms else "no step yet"],
                   hovertemplate="a training step (median of the last 10): %{y:.1f} ms<extra></extra>")
    axes = grid_axes(1, 3)
    for suffix, domain in (("", [0.0, 0.26]), ("2", [0.34, 0.76]), ("3", [0.83, 1.0])):  # widest: 3 FLOPs bars
        axes[f"xaxis{suffix}"]["domain"] = domain
    ratio_p = total / active if math.isfinite(active) and active > 0 else nan
    ratio_f = float(flops.get("ratio_to_dense", nan))
    sub = join_parts(f"{snap.router}, E = {snap.n_experts}, k = {snap.top_k}",
                     f"stores {ratio_p:.1f}× the parameters it uses" if math.isfinite(ratio_p) else "",
                     f"{ratio_f:.2f}× the FLOPs of a same-width dense MLP" if math.isfinite(ratio_f) else "")
    layout = layout_dict("What sparsity buys, for one MoE layer", HEIGHT, sub)
    layout.update(axes)
    for suffix in ("", "2", "3"):
        layout[f"yaxis{suffix}"].update(rangemode="tozero", automargin=True)
        layout[f"xaxis{suffix}"].update(tickfont=dict(size=14), tickangle=0, automargin=True)
    layout["annotations"] = [
        panel_title("parameters", axes["xaxis"], axes["yaxis"]),
        panel_title("FLOPs per token", axes["xaxis2"], axes["yaxis2"]),
        panel_title("ms per step", axes["xaxis3"], axes["yaxis3"]),
    ]
    layout["margin"].update(t=layout["margin"]["t"] + PANEL_TITLE_PX, l=50)
    layout["showlegend"] = False  # the bars are named on their axes
    return make_figure(data, layout)
