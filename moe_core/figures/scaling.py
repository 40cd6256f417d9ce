"""Scaling out: what expert parallelism would exchange for the current batch (GShard / Switch all-to-all).

Experts are split over W devices; each device sends every token slot to the device that holds its expert
and gets the result back. Left: who sends how many token slots to whom. Right: bytes each device sends
per step (forward and backward), and the share of the step it would wait for the busiest device.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from moe_core.figures.common import PANEL_TITLE_PX, grid_axes, make_figure, message_figure, panel_title
from moe_core.figures.palette import layout_dict
from moe_core.training.snapshot import BatchSlots, Snapshot

SEND_COLOR, RECV_COLOR, WAIT_COLOR = "#0072B2", "#56B4E9", "#D55E00"
HEIGHT = 470


def scaling_data(snap: Snapshot) -> dict | None:
    """What expert parallelism would exchange for the snapshot's last training batch: experts split over W ranks
    (the largest of 4, 2 dividing E), tokens in contiguous blocks; counts and bytes from
    moe_core.scale_out.ep_traffic. Computed when first asked (the snapshot keeps only the batch's slots) and kept
    in snap.extra["scaling"]; None when there is nothing to show."""
    if "scaling" in snap.extra:
        return snap.extra["scaling"]
    slots: BatchSlots | None = snap.extra.get("batch_slots")
    if slots is None:
        return None
    from moe_core.scale_out.ep_traffic import implied_traffic, traffic_matrix

    cfg = slots.config
    W = next((w for w in (4, 2) if cfg.n_experts % w == 0), 1)
    frame = implied_traffic(slots, cfg, W)  # reads expert_index, selected, dropped, n_tokens like a RoutingInfo
    candidates, kept = traffic_matrix(slots.expert_index, slots.selected & ~slots.dropped, W, cfg.n_experts,
                                      slots.selected)
    snap.extra["scaling"] = {"world_size": W, "ranks": frame.to_dict("list"), "candidates": candidates.cpu().numpy(),
                             "kept": kept.cpu().numpy(), "d_model": cfg.d_model, "top_k": cfg.top_k}
    return snap.extra["scaling"]


def scaling_out(snap: Snapshot) -> go.Figure:
    data = scaling_data(snap)
    if data is None:
        why = ("expert choice and Soft MoE decide over the whole batch, which this exchange does not model"
               if snap.router in ("expert_choice", "soft") else "no training step yet")
        return message_figure("Scaling out", f"Nothing to show: {why}.")
    W, ranks = data["world_size"], data["ranks"]
    kept = np.asarray(data["kept"])
    # devices are named by number on every axis ("device 0" four times did not fit a half-width chart and was
    # turned on its side); the heatmap's rows also say which experts each device holds
    devices = [str(r) for r in range(W)]
    rows = [f"{r} (E{ranks['experts'][r]})" for r in range(W)]
    kib = {key: np.asarray(ranks[key], dtype=float) / 1024 for key in ("bytes_sent", "bytes_recv")}
    wait = 100 * np.asarray(ranks["modeled_wait"], dtype=float)
    axes = grid_axes(1, 2)
    axes["xaxis"].update(domain=[0.0, 0.36], title=dict(text="to device"), type="category")
    axes["xaxis2"].update(domain=[0.56, 0.86], title=dict(text="device"), type="category")
    axes["yaxis"].update(autorange="reversed", title=dict(text="from device"), type="category")
    axes["yaxis2"].update(title=dict(text="KiB per step"), rangemode="tozero")
    axes["yaxis3"] = dict(overlaying="y2", side="right", anchor="x2", range=[0, 100], tickvals=[0, 25, 50, 75, 100],
                          showgrid=False, title=dict(text="waiting (%)"))
    traces = [
        dict(type="heatmap", z=kept, x=devices, y=rows, colorscale=[[0, "#F7FBFF"], [1, "#08306B"]], text=kept,
             texttemplate="%{text}", showscale=False, xaxis="x", yaxis="y", name="token slots", showlegend=False,
             hovertemplate="device %{y} -> device %{x}: %{z} token slots<extra></extra>"),
        dict(type="bar", x=devices, y=kib["bytes_sent"], name="KiB sent", marker=dict(color=SEND_COLOR),
             xaxis="x2", yaxis="y2", hovertemplate="device %{x}: %{y:,.1f} KiB sent<extra></extra>"),
        dict(type="bar", x=devices, y=kib["bytes_recv"], name="KiB received", marker=dict(color=RECV_COLOR),
             xaxis="x2", yaxis="y2", hovertemplate="device %{x}: %{y:,.1f} KiB received<extra></extra>"),
        dict(type="scatter", x=devices, y=wait, name="% of step waiting", mode="markers+lines", xaxis="x2",
             yaxis="y3", marker=dict(size=11, color=WAIT_COLOR), line=dict(color=WAIT_COLOR, dash="dot"),
             hovertemplate="device %{x}: waits %{y:.0f} % of the step<extra></extra>"),
    ]
    total = float(np.sum(ranks["bytes_sent"])) / 1024
    sub = (f"{total:,.0f} KiB all-to-all per step (k = {data['top_k']}, d = {data['d_model']}, float32, "
           f"forward + backward) · an idle device waits for the busiest one")
    layout = layout_dict(f"Scaling out to {W} devices: all-to-all traffic", HEIGHT, sub)
    layout.update(axes, barmode="group")
    # the legend under the panels, not beside them: at half width a side legend left each panel ~150 px
    layout["legend"].update(orientation="h", x=1.0, xanchor="right", y=-0.2, yanchor="top")
    layout["annotations"] = [panel_title("token slots sent", axes["xaxis"], axes["yaxis"]),
                             panel_title("per device, one step", axes["xaxis2"], axes["yaxis2"])]
    layout["margin"].update(t=layout["margin"]["t"] + PANEL_TITLE_PX, b=layout["margin"]["b"] + 40)
    return make_figure(traces, layout)
