"""Language views: the probe text coloured by expert, and each expert's most frequent characters."""

from __future__ import annotations

import html

import numpy as np
import plotly.graph_objects as go

from moe_core.figures.common import get_layer, group_kind, group_name, make_figure, message_figure
from moe_core.figures.palette import (
    expert_colors,
    expert_name,
    join_parts,
    layer_label,
    layout_dict,
    text_color_on,
    with_alpha,
)
from moe_core.training.snapshot import Snapshot

BACKGROUND_ALPHA = 0.35  # light fill behind each character; the full colour underlines it
VISIBLE = {" ": "␣", "\n": "⏎", "\t": "⇥", "\r": "␍"}
VISIBLE_NAMES = {" ": "␣ space", "\n": "⏎ newline", "\t": "⇥ tab", "\r": "␍ return"}


def visible_char(c: str) -> str:
    """A character as a reader can see it: "␣ space", "⏎ newline", other characters unchanged."""
    return VISIBLE_NAMES.get(c, c)


def probe_text_html(snap: Snapshot, layer: int = 0) -> str:
    """HTML of the probe text, one <span class="tok"> per character, background = its top-1 expert's colour
    (light), underline = the full colour, title = "expert E3, domain code". Newlines show as ⏎ and break the
    line; everything is HTML-escaped."""
    view = get_layer(snap, layer)
    if snap.probe_text is None or view.probe_text_experts is None:
        return "<p><em>No probe text in this snapshot (the coloured text is for language models).</em></p>"
    text = snap.probe_text
    experts = np.asarray(view.probe_text_experts)
    domains = np.asarray(snap.probe_text_domains) if snap.probe_text_domains is not None else None
    E = snap.n_experts
    colors = expert_colors(E)
    fills = [with_alpha(c, BACKGROUND_ALPHA) for c in colors]
    kind = group_kind(snap)
    parts = []
    for i, ch in enumerate(text[: len(experts)]):
        e = int(experts[i])
        about = f"expert {expert_name(e)}"
        if domains is not None and i < len(domains):
            about += f", {kind} {group_name(snap, int(domains[i]))}"
        shown = ch if ch == " " else VISIBLE.get(ch, ch)  # a space stays a (coloured) space
        parts.append(f'<span class="tok" style="background:{fills[e]};border-bottom:3px solid {colors[e]}" '
                     f'title="{html.escape(about)}">{html.escape(shown)}</span>')
        if ch == "\n":
            parts.append("<br>")
    style = ("font-family:ui-monospace,Menlo,Consolas,monospace;font-size:18px;line-height:2;white-space:pre-wrap;"
             "word-break:break-all")
    return f'<div class="moe-probe-text" style="{style}">{"".join(parts)}</div>'


def expert_legend_html(n_experts: int) -> str:
    """A row of coloured swatches naming the experts, to show next to probe_text_html."""
    colors = expert_colors(n_experts)
    items = "".join(f'<span class="swatch" style="display:inline-block;margin:0 10px 4px 0">'
                    f'<span style="display:inline-block;width:14px;height:14px;background:{c};'
                    f'vertical-align:middle;margin-right:4px"></span>{expert_name(e)}</span>'
                    for e, c in enumerate(colors))
    return f'<div class="moe-expert-legend" style="font-size:16px">{items}</div>'


def top_tokens_figure(snap: Snapshot, layer: int = 0) -> go.Figure:
    """A table with one row per expert: the characters routed to it most often (top-1, test windows) with
    their counts; space and newline are shown by name."""
    view = get_layer(snap, layer)
    if view.top_tokens is None:
        return message_figure("Each expert's favourite characters", "Only language models route characters.")
    E = len(view.top_tokens)
    colors = expert_colors(max(E, 1))
    rows = ["   ".join(f"{html.escape(visible_char(c))} ×{n}" for c, n in items) if items else "(none routed here)"
            for items in view.top_tokens]
    table = dict(
        type="table", columnwidth=[0.7, 5.0],
        header=dict(values=["<b>expert</b>", "<b>most frequent characters (× count)</b>"],
                    fill=dict(color="#F2F2F2"), align="left", font=dict(size=15), height=32),
        cells=dict(values=[[f"<b>{expert_name(e)}</b>" for e in range(E)], rows],
                   fill=dict(color=[colors[:E], [with_alpha(c, BACKGROUND_ALPHA) for c in colors[:E]]]),
                   align="left", height=30,
                   font=dict(size=15, color=[[text_color_on(c) for c in colors[:E]], ["#111"] * E])),
    )
    height = min(460, 160 + 36 * E)  # a taller table scrolls
    sub = join_parts("characters whose top-1 expert it is, in the test windows",
                     layer_label(int(layer), len(snap.layers)), f"step {snap.step}")
    layout = layout_dict("Each expert's favourite characters", height, sub)
    layout["margin"].update(l=20, r=20, b=20)
    return make_figure([table], layout)
