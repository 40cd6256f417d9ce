"""Capacity buffers (Switch Transformer, Fedus et al. 2021, Fig. 3, live): each expert has C slots; its tokens
fill them in order and the ones that find no free slot are dropped.

Each expert is one block of square slots, filled bottom-up and left to right, w slots wide (w is chosen so the
squares stay square on a typical plot). One heatmap draws all of them, so squares scale with the figure:
z = e for a slot holding a token of expert e, E for an empty slot, E + 1 for a dropped token, NaN elsewhere.
When buffers are long, each square stands for n tokens (rounded up) and the title says so.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go

from moe_core.figures.common import get_layer, make_figure
from moe_core.figures.palette import (
    DROPPED_COLOR,
    EMPTY_COLOR,
    colored_name,
    expert_colors,
    expert_name,
    join_parts,
    layer_label,
    layout_dict,
    tick_step,
)
from moe_core.training.snapshot import Snapshot

HEIGHT = 440
PLOT_PX = (560.0, 270.0)  # typical plot-area size (width, height) the block width is tuned for
KEPT, EMPTY, DROPPED = 0, 1, 2
_STATUS = np.array(["token kept", "empty slot", "token dropped (buffer full)", ""], dtype=object)


def squares(tokens: int, per_square: int) -> int:
    """Squares needed for `tokens` tokens at per_square tokens each (rounded up)."""
    return -(-int(tokens) // per_square)


def slot_status(tokens: int, kept: int, capacity: int | None, per_square: int) -> np.ndarray:
    """Status of each square of one expert, bottom-up: KEPT, then EMPTY up to the capacity, then DROPPED."""
    k, d = squares(kept, per_square), squares(tokens - kept, per_square)
    c = k if capacity is None else max(k, squares(capacity, per_square))
    return np.concatenate([np.full(k, KEPT), np.full(c - k, EMPTY), np.full(d, DROPPED)]).astype(np.int8)


def block_width(n_experts: int, tallest: int) -> int:
    """Slots per row of an expert's block so that the squares are closest to square on a PLOT_PX plot."""
    best, best_err = 1, math.inf
    for w in range(1, max(1, tallest) + 1):
        cols = n_experts * w + (n_experts - 1 if w > 1 else 0)  # one blank column between blocks when w > 1
        rows = max(1, math.ceil(tallest / w))
        err = abs(math.log((PLOT_PX[0] / cols) / (PLOT_PX[1] / rows)))
        if err < best_err:
            best, best_err = w, err
    return best


def buffer_grid(statuses: list[np.ndarray], w: int) -> tuple[np.ndarray, np.ndarray]:
    """(z, slot) grids of shape (rows, columns): z as in the module docstring; slot = index of the square in its
    expert's buffer (-1 where there is none). Expert e occupies columns e*(w+s) .. e*(w+s)+w-1, s = 1 if w > 1."""
    E = len(statuses)
    sep = 1 if w > 1 else 0
    rows = max(1, max((math.ceil(len(s) / w) for s in statuses), default=1))
    cols = E * w + (E - 1) * sep
    z = np.full((rows, max(cols, 1)), np.nan)
    slot = np.full(z.shape, -1, dtype=np.int64)
    for e, st in enumerate(statuses):
        i = np.arange(len(st))
        r, c = i // w, e * (w + sep) + i % w
        z[r, c] = np.where(st == KEPT, e, np.where(st == EMPTY, E, E + 1))
        slot[r, c] = i
    return z, slot


def _capacity_path(E: int, w: int, cap_squares: int) -> tuple[list, list]:
    """x, y of a line along the top of every expert's first C squares (a step where the last row is partial)."""
    sep = 1 if w > 1 else 0
    full, part = divmod(cap_squares, w)
    xs: list = []
    ys: list = []
    for e in range(E):
        left = e * (w + sep) - 0.5
        if part:
            xs += [left, left + part, left + part, left + w, None]
            ys += [full + 1 - 0.5, full + 1 - 0.5, full - 0.5, full - 0.5, None]
        else:
            xs += [left, left + w, None]
            ys += [full - 0.5, full - 0.5, None]
    return xs, ys


def capacity_buffers(snap: Snapshot, layer: int = 0, max_slots: int = 64) -> go.Figure:
    """Each expert's buffer of C slots as a block of squares: kept tokens in the expert's colour, empty slots
    light grey, and the overflowing tokens as red "dropped" squares after the capacity. Dropless layers show
    the kept tokens only. At most max_slots squares per expert: above that each square stands for n tokens."""
    if isinstance(max_slots, bool) or not isinstance(max_slots, int) or max_slots < 1:
        raise ValueError(f"max_slots={max_slots!r} is out of range: allowed a positive integer")
    view = get_layer(snap, layer)
    tokens = np.asarray(view.tokens_per_expert, dtype=np.int64)
    kept = np.asarray(view.kept_per_expert, dtype=np.int64)
    C = None if view.capacity is None else int(view.capacity)
    E = len(tokens)
    tallest = max(int(tokens.max()) if E else 0, C or 0, 1)
    n = max(1, math.ceil(tallest / max_slots))
    statuses = [slot_status(int(t), int(k), C, n) for t, k in zip(tokens, kept, strict=True)]
    w = block_width(E, max(len(s) for s in statuses) if statuses else 1)
    z, slot = buffer_grid(statuses, w)
    rows, cols = z.shape
    colors = [*expert_colors(max(E, 1)), EMPTY_COLOR, DROPPED_COLOR]
    m = len(colors)
    scale = [[s, colors[c]] for c in range(m) for s in (c / m, (c + 1) / m)]
    code = np.where(np.isnan(z), 3, np.where(z < E, KEPT, np.where(z == E, EMPTY, DROPPED)))
    first = slot * n + 1
    owner = np.where(slot >= 0, np.arange(cols)[None, :] // (w + (1 if w > 1 else 0)), -1)
    custom = np.stack([owner, first, first + n - 1], axis=-1)
    tokens_text = "token %{customdata[1]}" if n == 1 else "tokens %{customdata[1]}–%{customdata[2]}"
    small = rows * cols > 1500
    data = [dict(type="heatmap", x=np.arange(cols), y=np.arange(rows), z=z, colorscale=scale, zmin=-0.5,
                 zmax=m - 0.5, showscale=False, xgap=0 if small else 2, ygap=0 if small else 2,
                 text=_STATUS[code], customdata=custom, hoverongaps=False, name="slots", showlegend=False,
                 hovertemplate=f"E%{{customdata[0]}} · {tokens_text}: %{{text}}<extra></extra>")]
    if C is not None:
        data += [dict(type="scatter", x=[None], y=[None], mode="markers", name=name, hoverinfo="skip",
                      marker=dict(symbol="square", size=14, color=color, line=dict(width=1, color="#999")))
                 for name, color in (("empty slot", EMPTY_COLOR), ("dropped token", DROPPED_COLOR))]
        xs, ys = _capacity_path(E, w, squares(C, n))
        data.append(dict(type="scatter", x=xs, y=ys, mode="lines", name=f"capacity C = {C}", hoverinfo="name",
                         line=dict(color="#111", width=2.5)))
    n_dropped = int((tokens - kept).sum())
    if C is None:
        title = "Each expert's tokens (dropless, no capacity)"
    else:
        slots, tokens = ("slot" if C == 1 else "slots"), ("token" if n_dropped == 1 else "tokens")
        title = f"Buffers of C = {C} {slots}: {n_dropped} {tokens} dropped"
    per = "each square = 1 token" if n == 1 else f"each square = {n} tokens (rounded up)"
    sub = "red = arrived when the buffer was full" if C is not None else "every routed token is processed"
    layout = layout_dict(title, HEIGHT, join_parts(per, sub, layer_label(int(layer), len(snap.layers)),
                                                   f"step {snap.step}"))
    sep = 1 if w > 1 else 0
    step = tick_step(E)
    ticks = list(range(0, E, step))
    row_ticks = list(range(0, rows + 1, max(1, math.ceil(rows / 6))))
    layout.update(
        xaxis=dict(title=dict(text="expert"), showgrid=False, zeroline=False, tickmode="array",
                   tickvals=[e * (w + sep) + (w - 1) / 2 for e in ticks], range=[-0.5, cols - 0.5],
                   ticktext=[colored_name(e) if step == 1 else expert_name(e) for e in ticks]),
        yaxis=dict(title=dict(text="tokens in the buffer"), showgrid=False, zeroline=False, tickmode="array",
                   tickvals=[r - 0.5 for r in row_ticks], ticktext=[str(r * w * n) for r in row_ticks],
                   range=[-0.5, rows - 0.5 + 0.3]),
    )
    return make_figure(data, layout)
