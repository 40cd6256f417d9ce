"""Scaling out: what expert parallelism would exchange for the current batch (GShard / Switch all-to-all).

Experts are split over W devices; each device sends every token slot to the device that holds its expert
and gets the result back. Left: who sends how many token slots to whom. Right: bytes each device sends
per step (forward and backward), and the share of the step it would wait for the busiest device.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from moe_core.figures.common import message_figure
from moe_core.figures.palette import base_layout
from moe_core.snapshot import Snapshot

SEND_COLOR, RECV_COLOR, WAIT_COLOR = "#0072B2", "#56B4E9", "#D55E00"


def scaling_out(snap: Snapshot) -> go.Figure:
    data = snap.extra.get("scaling")
    if data is None:
        why = ("expert choice and Soft MoE decide over the whole batch, which this exchange does not model"
               if snap.router in ("expert_choice", "soft") else "no training step yet")
        return message_figure("Scaling out", f"Nothing to show: {why}.")
    W = data["world_size"]
    ranks = data["ranks"]
    kept = np.asarray(data["kept"])
    labels = [f"device {r}<br>(E{ranks['experts'][r]})" for r in range(W)]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.16,
                        subplot_titles=("token slots sent: from (row) to (column)", "per device, one step"),
                        specs=[[{"type": "heatmap"}, {"secondary_y": True}]])
    fig.add_trace(go.Heatmap(z=kept, x=labels, y=labels, colorscale=[[0, "#F7FBFF"], [1, "#08306B"]],
                             text=kept, texttemplate="%{text}", showscale=False,
                             hovertemplate="%{y} -> %{x}: %{z} token slots<extra></extra>"), row=1, col=1)
    kb = lambda key: np.asarray(ranks[key], dtype=float) / 1024  # noqa: E731
    x = [f"device {r}" for r in range(W)]
    fig.add_trace(go.Bar(x=x, y=kb("bytes_sent"), name="KiB sent", marker_color=SEND_COLOR), row=1, col=2)
    fig.add_trace(go.Bar(x=x, y=kb("bytes_recv"), name="KiB received", marker_color=RECV_COLOR), row=1, col=2)
    fig.add_trace(go.Scatter(x=x, y=100 * np.asarray(ranks["modeled_wait"], dtype=float), name="% of step waiting",
                             mode="markers+lines", marker=dict(size=11, color=WAIT_COLOR),
                             line=dict(color=WAIT_COLOR, dash="dot")), row=1, col=2, secondary_y=True)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_yaxes(title_text="KiB per step", row=1, col=2, secondary_y=False)
    fig.update_yaxes(title_text="waiting (%)", range=[0, 100], tickmode="array", tickvals=[0, 25, 50, 75, 100],
                     showgrid=False, row=1, col=2, secondary_y=True)
    total = float(np.sum(ranks["bytes_sent"])) / 1024
    sub = (f"{W} devices · {total:,.0f} KiB all-to-all per step (k = {data['top_k']}, d = {data['d_model']}, "
           f"float32, forward + backward) · an idle device waits for the busiest one")
    base_layout(fig, f"Scaling out: experts on {W} devices, tokens travel all-to-all", height=430, subtitle=sub)
    fig.update_layout(barmode="group", margin=dict(t=120))
    fig.update_annotations(yshift=8, selector=dict(text="token slots sent: from (row) to (column)"))
    return fig
