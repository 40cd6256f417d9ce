"""Expert load: how many tokens of the last training batch each expert received, kept vs dropped; with expert
choice, also the tokens no expert picked (left behind: Zhou et al. 2022, arXiv:2202.09368)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from moe_core.figures.common import get_layer, make_figure
from moe_core.figures.palette import (
    DROPPED_COLOR,
    expert_colors,
    expert_ticks,
    join_parts,
    layer_label,
    layout_dict,
)
from moe_core.training.snapshot import Snapshot

HEIGHT = 420
DROPPED_FILL = "#BDBDBD"  # grey bar, hatched in dark grey: the tokens an expert had no room for
FAIR_COLOR = "#333333"
LEFT_BEHIND_FILL = "#FFFFFF"  # an empty bar, outlined: tokens that no expert processes
NO_EXPERT_TICK = "no<br>expert"  # two short lines stay level beside the experts' names
Y_HEADROOM = 1.12  # the y axis ends this much above the tallest bar or line


def _line(y: float, E: int, name: str, dash: str, color: str) -> dict:
    return dict(type="scatter", x=[-0.5, E - 0.5], y=[y, y], mode="lines", name=name, hoverinfo="name",
                line=dict(color=color, width=2.5, dash=dash))


def expert_load(snap: Snapshot, layer: int = 0) -> go.Figure:
    """Bars per expert of the tokens routed to it in the last training batch: kept (expert colour) stacked under
    dropped (grey, hatched), with the capacity C (absent when dropless) and the fair share k·T/E as lines. With
    expert choice, one more bar past the experts, "no expert": the batch's tokens that no expert picked (they get
    no MoE output), and the title counts them."""
    view = get_layer(snap, layer)
    tokens = np.asarray(view.tokens_per_expert, dtype=np.int64)
    kept = np.asarray(view.kept_per_expert, dtype=np.int64)
    dropped = tokens - kept
    E = len(tokens)
    x = np.arange(E)
    total, n_dropped = int(tokens.sum()), int(dropped.sum())
    fair = total / E if E else 0.0
    custom = np.stack([tokens, kept, dropped], axis=-1)
    hover = "E%{x}: %{customdata[0]} routed, %{customdata[1]} kept, %{customdata[2]} dropped<extra></extra>"
    data = [
        dict(type="bar", x=x, y=kept, name="kept (colour = expert)", customdata=custom, hovertemplate=hover,
             marker=dict(color=expert_colors(E), line=dict(width=0))),
        dict(type="bar", x=x, y=dropped, name="dropped (over capacity)", customdata=custom, hovertemplate=hover,
             showlegend=view.capacity is not None and snap.router != "expert_choice",  # it never drops
             marker=dict(color=DROPPED_FILL, line=dict(width=0),
                         pattern=dict(shape="/", fgcolor="#555", solidity=0.3))),
    ]
    T, k = snap.batch_tokens, snap.top_k
    fair_name = f"fair share k·T/E = {fair:.4g}" if total == k * T else f"fair share (slots / E) = {fair:.4g}"
    top = max(float(tokens.max()) if E else 0.0, float(view.capacity or 0), fair, 1.0)
    if view.capacity is not None:
        C = int(view.capacity)
        data.append(_line(C, E, f"capacity C = {C}", "solid", DROPPED_COLOR))
    # the lines carry their values in the legend: labels on the lines would sit on the bars
    data.append(_line(fair, E, fair_name, "dash", FAIR_COLOR))
    pct = 100.0 * n_dropped / total if total else 0.0
    title = f"Tokens per expert: {n_dropped} dropped ({pct:.1f} %)" if n_dropped else \
        "Tokens per expert: none dropped"
    if view.capacity is None:
        title = "Tokens per expert (dropless: none dropped)"
    if not T:
        batch = "last training batch"
    elif total == k * T:
        batch = f"last training batch: T = {T} tokens, k = {k} → {total} routed slots"
    elif total == E * T:  # dense: every token on every expert, whatever the config's k
        batch = f"last training batch: T = {T} tokens, every token on all {E} experts → {total} slots"
    else:  # expert choice, soft MoE: the experts' slots, not k per token
        batch = f"last training batch: T = {T} tokens → {total} expert slots ({total / T:.2g} per token)"
    left = int(view.left_behind)
    ticks = expert_ticks(E)
    if snap.router == "expert_choice":  # each expert picks its top-C tokens: some tokens are picked by none
        share = 100.0 * left / T if T else 0.0
        data.append(dict(type="bar", x=[E + 0.5], y=[left], name="no expert (left behind)", showlegend=False,
                         text=[f"{left}"], textposition="outside", cliponaxis=False, width=0.85,  # named on the axis
                         hovertemplate=f"picked by no expert: {left} of {T} tokens ({share:.1f} %)<extra></extra>",
                         marker=dict(color=LEFT_BEHIND_FILL, line=dict(color=FAIR_COLOR, width=1.5),
                                     pattern=dict(shape=".", fgcolor="#777", solidity=0.2))))
        ticks = dict(ticks, tickvals=[*ticks["tickvals"], E + 0.5], ticktext=[*ticks["ticktext"], NO_EXPERT_TICK],
                     range=[-0.5, E + 1.1])
        top = max(top, float(left))
        title = f"Tokens per expert: {left} left behind ({share:.1f} %)" if T else "Tokens per expert"
    layout = layout_dict(title, HEIGHT, join_parts(batch, layer_label(int(layer), len(snap.layers)),
                                                   f"step {snap.step}"))
    layout.update(
        barmode="stack", bargap=0.15,
        xaxis=dict(title=dict(text="expert"), **ticks),
        yaxis=dict(title=dict(text="tokens"), range=[0, top * Y_HEADROOM], rangemode="tozero"),
    )
    return make_figure(data, layout)
