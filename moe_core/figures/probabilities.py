"""Router probabilities of the probe tokens: a tokens x experts heatmap with the chosen experts marked."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from moe_core.figures.common import (
    NON_CHOICE_ROUTERS,
    get_layer,
    group_kind,
    group_name,
    make_figure,
    message_figure,
    probe_chosen,
)
from moe_core.figures.palette import (
    DROPPED_COLOR,
    colorscale,
    expert_ticks,
    join_parts,
    layer_label,
    layout_dict,
    thin_ticks,
)
from moe_core.training.snapshot import LayerView, Snapshot

HEIGHT = 460
PROB_SCALE = colorscale("Blues")
_PLOT_PX = (560.0, 300.0)  # rough plot-area size (width, height) used to size the markers to the cells


def probe_order(snap: Snapshot) -> np.ndarray:
    """Row order of the probes: grouped by class / regime (stable) when the snapshot knows the groups."""
    P = snap.layers[0].probe_probs.shape[0] if snap.layers else 0
    if snap.probe_group is None or len(snap.probe_group) != P:
        return np.arange(P)
    return np.argsort(np.asarray(snap.probe_group), kind="stable")


def chosen_cells(snap: Snapshot, view: LayerView) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(token, expert) of the kept choices and of the dropped choices of the probes, in probe numbering."""
    chosen = probe_chosen(view, snap.router)
    dropped = chosen & view.probe_dropped
    kept = chosen & ~view.probe_dropped
    tk, sk = np.nonzero(kept)
    td, sd = np.nonzero(dropped)
    return tk, view.probe_expert_index[tk, sk], td, view.probe_expert_index[td, sd]


def router_probabilities(snap: Snapshot, layer: int = 0) -> go.Figure:
    """Probe tokens (rows) x experts (columns) coloured by router probability (0..1); a dot marks each chosen
    expert (top-k), a red × a choice that was dropped for lack of capacity. Hover: token, its group, p."""
    view = get_layer(snap, layer)
    probs = np.asarray(view.probe_probs, dtype=np.float64)
    P, E = probs.shape
    if P == 0:
        return message_figure("Router probabilities", "No probe tokens in this snapshot.")
    order = probe_order(snap)
    rank = np.empty(P, dtype=int)
    rank[order] = np.arange(P)  # row of each probe
    groups = np.asarray(snap.probe_group) if snap.probe_group is not None and len(snap.probe_group) == P else None
    word = "point" if snap.task != "language" else "token"
    chars = view.probe_tokens if view.probe_tokens is not None and len(view.probe_tokens) == P else None
    shown = {" ": "␣", "\n": "⏎"}
    labels = np.array([f"{word} {t}" + (f" '{shown.get(chars[t], chars[t])}'" if chars is not None else "")
                       + (f" ({group_name(snap, int(groups[t]))})" if groups is not None else "")
                       for t in order], dtype=object)
    data = [dict(type="heatmap", x=np.arange(E), y=np.arange(P), z=probs[order], zmin=0.0, zmax=1.0,
                 colorscale=PROB_SCALE, colorbar=dict(title=dict(text="router probability", side="right"),
                                                      thickness=14, tickvals=[0, 0.25, 0.5, 0.75, 1]),
                 text=np.repeat(labels[:, None], E, axis=1), name="probabilities", showlegend=False,
                 hovertemplate="%{text}<br>E%{x}: p = %{z:.3f}<extra></extra>")]
    cell = min(_PLOT_PX[0] / E, _PLOT_PX[1] / P)
    marks = snap.router not in NON_CHOICE_ROUTERS
    if marks:
        tk, ek, td, ed = chosen_cells(snap, view)
        data.append(dict(type="scatter", x=ek, y=rank[tk], mode="markers", name="chosen expert",
                         marker=dict(symbol="circle", size=float(np.clip(0.55 * cell, 4, 14)), color="#FFFFFF",
                                     line=dict(width=1.5, color="#111")), hoverinfo="skip"))
        data.append(dict(type="scatter", x=ed, y=rank[td], mode="markers", name="chosen but dropped (buffer full)",
                         marker=dict(symbol="x", size=float(np.clip(0.8 * cell, 6, 16)), color=DROPPED_COLOR,
                                     line=dict(width=1, color="#FFFFFF")), hoverinfo="skip",
                         showlegend=bool(len(td)) or view.capacity is not None))
    kind = "tokens" if snap.task == "language" else "points"
    title = f"Router probabilities of {P} probe {kind}"
    if not marks:
        sub = "every expert processes every token here: no discrete choice to mark"
    elif snap.router == "expert_choice":
        sub = "dot = an expert picked this token (expert choice)"
    else:
        sub = f"dot = chosen (top-{snap.top_k})"
    if marks and (view.capacity is not None or view.probe_dropped.any()):
        sub += " · red × = chosen but dropped (buffer full)"
    layout = layout_dict(title, HEIGHT, join_parts(sub, layer_label(int(layer), len(snap.layers)),
                                                   f"step {snap.step}"))
    yticks = thin_ticks(P)
    if groups is not None:
        starts = [r for r in range(P) if r == 0 or groups[order[r]] != groups[order[r - 1]]]
        ytext = [group_name(snap, int(groups[order[r]])) for r in starts]
        yaxis = dict(tickmode="array", tickvals=starts, ticktext=ytext, title=dict(text=f"probe {word}s by "
                                                                                        f"{group_kind(snap)}"))
    else:
        yaxis = dict(tickmode="array", tickvals=yticks, ticktext=[str(v) for v in yticks],
                     title=dict(text=f"probe {word}"))
    layout.update(
        xaxis=dict(title=dict(text="expert"), showgrid=False, zeroline=False, **expert_ticks(E)),
        yaxis=dict(autorange="reversed", showgrid=False, zeroline=False, **yaxis),
        legend=dict(orientation="h", x=0.0, xanchor="left", y=-0.16, yanchor="top", font=dict(size=14)),
    )
    layout["margin"]["b"] = 100
    return make_figure(data, layout)
