"""Specialization: which expert handles which class / regime / domain, and which experts fire together."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from moe_core.figures.common import get_layer, group_kind, group_name, make_figure, message_figure
from moe_core.figures.palette import colorscale, expert_ticks, join_parts, layer_label, layout_dict
from moe_core.training.snapshot import Snapshot

NORMALIZE = ("row", "column", "none")
HEIGHT = 420
SHARE_SCALE = colorscale("Blues")
MAX_CELL_TEXT = 160  # write the value in each cell up to this many cells
MAX_TEXT_COLUMNS = 12  # and up to this many experts: "0.14" needs about 30 px of a half-width chart


def normalized_counts(counts: np.ndarray, normalize: str) -> np.ndarray:
    """Row shares (each group sums to 1), column shares (each expert sums to 1) or raw counts; empty rows or
    columns stay 0."""
    counts = np.asarray(counts, dtype=np.float64)
    if normalize == "none":
        return counts
    axis = 1 if normalize == "row" else 0
    total = counts.sum(axis=axis, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)


def counted(snap: Snapshot, basis: str, normalize: str = "row") -> str:
    """What the specialization table counts, in words: the kept routing slots or, for routers where every expert
    runs on every token (LayerView.group_counts_basis == "first_choice"), each token's first choice."""
    kind = group_kind(snap)
    if basis == "first_choice":
        unit = "token" if snap.task == "language" else "point"
        return {"row": f"share of each {kind}'s {unit}s by first choice",
                "column": f"share of each expert's first choices per {kind}",
                "none": f"{unit}s by first choice"}[normalize] + " (every expert runs in this router)"
    return {"row": f"share of each {kind}'s routing slots", "column": f"share of each expert's slots per {kind}",
            "none": "routing slots"}[normalize]


def specialization(snap: Snapshot, layer: int = 0, normalize: str = "row") -> go.Figure:
    """Group (class / regime / domain) x expert heatmap of the test set's routing slots (or, where every expert
    runs, of each token's first choice: moe_core.training.snapshot.group_counts), with the mutual information
    I(expert; group) in the title.

    normalize: "row" (share of each group's slots per expert, default), "column" (share of each expert's slots
    per group) or "none" (counts).
    """
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize={normalize!r} is out of range: allowed one of {', '.join(NORMALIZE)}")
    view = get_layer(snap, layer)
    counts = np.asarray(view.group_expert_counts)
    G, E = counts.shape
    if G == 0:
        return message_figure("Expert specialization", "No groups to compare in this snapshot.")
    kind = group_kind(snap)
    z = normalized_counts(counts, normalize)
    names = [group_name(snap, g) for g in range(G)]
    fmt = "%{z:.0f}" if normalize == "none" else "%{z:.2f}"
    what = counted(snap, view.group_counts_basis, normalize)
    trace = dict(type="heatmap", x=np.arange(E), y=np.arange(G), z=z, colorscale=SHARE_SCALE, zmin=0.0,
                 zmax=1.0 if normalize != "none" else None, xgap=1, ygap=1, name="specialization", showlegend=False,
                 customdata=np.repeat(np.array(names, dtype=object)[:, None], E, axis=1),
                 colorbar=dict(title=dict(text="share" if normalize != "none" else
                                          "slots" if view.group_counts_basis == "slots" else "count", side="right"),
                               thickness=14),
                 hovertemplate=f"%{{customdata}} → E%{{x}}: {fmt}<extra></extra>")
    if E <= MAX_TEXT_COLUMNS and G * E <= MAX_CELL_TEXT:  # more cells than that and the numbers would collide
        trace.update(texttemplate=fmt, textfont=dict(size=13))
    mi = float(view.mutual_information)
    mi_max = math.log(min(G, E)) if min(G, E) > 1 else 0.0
    # the number first and alone: a longer title was cut at the chart's edge, mid-digit, on half-width charts
    title = f"I(expert; {kind}) = {mi:.2f} nats"
    sub = join_parts(what, f"0 nats = no specialization, max {mi_max:.2f} = ln {min(G, E)}",
                     layer_label(int(layer), len(snap.layers)), f"step {snap.step}")
    layout = layout_dict(title, HEIGHT, sub)
    layout.update(
        xaxis=dict(title=dict(text="expert"), showgrid=False, zeroline=False, **expert_ticks(E, colored=True)),
        yaxis=dict(tickmode="array", tickvals=list(range(G)), ticktext=names, autorange="reversed",
                   title=dict(text=kind), showgrid=False, zeroline=False),
    )
    return make_figure([trace], layout)


def co_activation(snap: Snapshot, layer: int = 0) -> go.Figure:
    """E x E heatmap of P(expert j also chosen | expert i chosen) (OLMoE-style); with k = 1 no two experts
    ever fire together, so an explanatory message figure is returned instead."""
    view = get_layer(snap, layer)
    co = np.asarray(view.co_activation, dtype=np.float64)
    E = co.shape[0]
    K = view.probe_expert_index.shape[1] if view.probe_expert_index.ndim == 2 else snap.top_k
    if K <= 1 or E <= 1:
        return message_figure("Which experts fire together",
                              "With k = 1 every token goes to a single expert,<br>so no two experts are ever "
                              "active together.<br>Set k ≥ 2 to see co-activation." if E > 1 else
                              "With a single expert there is nothing to pair.")
    z = co.copy()
    np.fill_diagonal(z, np.nan)  # always 0 by definition: leave blank
    trace = dict(type="heatmap", x=np.arange(E), y=np.arange(E), z=z, colorscale=SHARE_SCALE, zmin=0.0, zmax=1.0,
                 xgap=1 if E <= 32 else 0, ygap=1 if E <= 32 else 0, hoverongaps=False, name="co-activation",
                 showlegend=False, colorbar=dict(title=dict(text="P(j | i)", side="right"), thickness=14),
                 hovertemplate="token chose E%{y}: also chose E%{x} with p = %{z:.2f}<extra></extra>")
    if E <= MAX_TEXT_COLUMNS:
        trace.update(texttemplate="%{z:.2f}", textfont=dict(size=13))
    sub = join_parts("row i: how often a token that chose expert i also chose expert j",
                     layer_label(int(layer), len(snap.layers)), f"step {snap.step}")
    layout = layout_dict("Which experts fire together", HEIGHT + 30, sub)
    layout.update(
        xaxis=dict(title=dict(text="also chose expert j"), showgrid=False, zeroline=False, constrain="domain",
                   **expert_ticks(E, colored=True)),
        yaxis=dict(title=dict(text="token chose expert i"), showgrid=False, zeroline=False, scaleanchor="x",
                   constrain="domain", **{**expert_ticks(E, colored=True), "range": [E - 0.5, -0.5]}),
    )
    return make_figure([trace], layout)
