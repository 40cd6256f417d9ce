"""Small helpers every figure builder shares: picking a layer, naming groups, reading the probe choices."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from moe_core.figures.palette import FONT_SIZE, layout_dict
from moe_core.layer.config import EVERY_EXPERT_ROUTERS
from moe_core.training.snapshot import LayerView, Snapshot

PANEL_TITLE_PX = 35  # room a panel_title needs above the plots, between them and the (sub)title
NON_CHOICE_ROUTERS = EVERY_EXPERT_ROUTERS  # every expert processes every token: no discrete choice to mark
_GROUP_KIND = {"classification": "class", "regression": "regime", "language": "domain"}


def get_layer(snap: Snapshot, layer: int) -> LayerView:
    """snap.layers[layer], with an error that says which layers exist."""
    n = len(snap.layers)
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < n:
        raise ValueError(f"layer={layer!r} is out of range: this snapshot has MoE layers 0..{n - 1}")
    return snap.layers[int(layer)]


def group_kind(snap: Snapshot) -> str:
    """What a group is for this task: "class", "regime" or "domain"."""
    return _GROUP_KIND.get(snap.task, "group")


def group_name(snap: Snapshot, g: int) -> str:
    """The name of group g, or "group g" when the snapshot does not name it."""
    return snap.group_names[g] if 0 <= g < len(snap.group_names) else f"{group_kind(snap)} {g}"


def probe_chosen(view: LayerView, router: str) -> np.ndarray:
    """(P, K) bool: which probe slots are real choices (selected), dropped or not.

    The snapshot keeps expert_index, combine weights and the dropped mask of the probes but not RoutingInfo's
    `selected`. Token-choice routers select every slot. expert_choice lists all E experts per token and
    selects some: a selected slot is either kept (combine weight > 0) or dropped, so selected = combine > 0 |
    dropped. For dense and soft routing every slot is "selected".
    """
    if view.probe_selected is not None:
        return np.asarray(view.probe_selected, dtype=bool)
    if router == "expert_choice":
        return (view.probe_combine > 0) | view.probe_dropped
    return np.ones(view.probe_expert_index.shape, dtype=bool)


def entropy_nats(probs: np.ndarray) -> np.ndarray:
    """-Σ p ln p over the last axis (0 ln 0 = 0), in nats."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=-1)


# -- building figures fast ------------------------------------------------------------------------------------
def make_figure(data: list[dict], layout: dict) -> go.Figure:
    """A Figure from plain trace / layout dicts, skipping plotly.py's per-property validation.

    Validation costs ~30 ms per figure, more than our whole budget; the tests validate every builder's
    output once (go.Figure(fig.to_plotly_json())), so a typo still fails there.
    """
    try:
        return go.Figure(data=data, layout=layout, _validate=False)
    except TypeError:  # a plotly without the private switch: validate, slower but correct
        return go.Figure(data=data, layout=layout)


def message_figure(title: str, message: str, height: int = 350) -> go.Figure:
    """A figure with no data and a centred explanation (used when a view does not apply)."""
    layout = layout_dict(title, height)
    layout.update(
        showlegend=False,
        xaxis=dict(visible=False),
        yaxis=dict(visible=False),
        annotations=[dict(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                          font=dict(size=FONT_SIZE + 2, color="#444"), align="center")],
    )
    return make_figure([], layout)


def axis_id(i: int) -> str:
    """Plotly's name of the i-th (0-based) x or y axis suffix: "", "2", "3", ..."""
    return "" if i == 0 else str(i + 1)


def grid_axes(
    rows: int, cols: int, row_heights: list[float] | None = None, hspace: float = 0.1, vspace: float = 0.08,
    shared_x: bool = False,
) -> dict:
    """Layout axes for a rows x cols grid of panels (row-major: panel i uses x{i+1}/y{i+1}), like make_subplots
    but as a plain dict (make_subplots costs several ms). shared_x: one zoom for all x axes, labels at the bottom.
    """
    weights = np.asarray(row_heights if row_heights is not None else [1.0] * rows, dtype=float)
    heights = weights / weights.sum() * (1.0 - vspace * (rows - 1))
    width = (1.0 - hspace * (cols - 1)) / cols
    axes: dict = {}
    top = 1.0
    for r in range(rows):
        bottom = top - heights[r]
        for c in range(cols):
            i = r * cols + c
            left = c * (width + hspace)
            x = dict(domain=[left, left + width], anchor=f"y{axis_id(i)}")
            if shared_x:
                if i > 0:
                    x["matches"] = "x"
                if r < rows - 1:
                    x["showticklabels"] = False
            axes[f"xaxis{axis_id(i)}"] = x
            axes[f"yaxis{axis_id(i)}"] = dict(domain=[max(0.0, bottom), top], anchor=f"x{axis_id(i)}")
        top = bottom - vspace
    return axes


def panel_title(text: str, xaxis: dict, yaxis: dict) -> dict:
    """An annotation naming a panel, centred above it (the make_subplots subplot_titles look)."""
    return dict(text=text, x=sum(xaxis["domain"]) / 2, y=yaxis["domain"][1], xref="paper", yref="paper",
                xanchor="center", yanchor="bottom", yshift=8, showarrow=False, font=dict(size=FONT_SIZE + 1))
