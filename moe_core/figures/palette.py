"""One fixed colour per expert, shared by every view, and the common look of every figure.

Expert e has the same colour on every page and for every E: the list is prefix-stable, so
expert_colors(4) == expert_colors(64)[:4]. The first 12 colours are colour-blind-aware: the seven chromatic
Okabe-Ito colours (Okabe & Ito 2008) then five from Paul Tol's "muted" scheme. Experts 12..255 continue with a
deterministic golden-angle walk around the hue circle at three lightness levels, so neighbours stay apart.

Grey is kept out of the expert palette on purpose: views use it for "dropped" and "empty".
"""

from __future__ import annotations

import colorsys
import json
import math
import re
from functools import lru_cache

import plotly.graph_objects as go

MAX_EXPERTS = 256
FIXED_COLORS = (
    "#0072B2",  # blue (Okabe-Ito)
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#F0E442",  # yellow
    "#332288",  # indigo (Tol muted)
    "#117733",  # green
    "#882255",  # wine
    "#999933",  # olive
    "#44AA99",  # teal
)
# classes of the prediction view: Tol's "light" scheme, paler than the experts so the two never read alike
CLASS_COLORS = ("#77AADD", "#EE8866", "#EEDD88", "#FFAABB", "#99DDFF", "#44BB99", "#BBCC33", "#AAAA00",
                "#BB5566", "#DDDDDD")
DROPPED_COLOR = "#D62728"  # red: tokens over capacity
EMPTY_COLOR = "#E8E8E8"  # light grey: unused buffer slots
NEUTRAL_COLOR = "#7F7F7F"  # grey: dropped parts of bars, data points
UIREVISION = "moe-playground"  # constant, so Plotly keeps the user's zoom when a figure is rebuilt
FONT_SIZE = 14
TITLE_SIZE = 18
# above this many experts, axes name every n-th expert only (n from NICE_STEPS): ten names fit across a
# half-width chart's plot without Plotly turning them on their side
MAX_TICK_LABELS = 10
NICE_STEPS = (1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 40, 50, 64, 100, 128)
# Plotly never wraps a title: what does not fit is cut at the figure's edge. The app draws two charts per row
# (about 620 px each at a 1400 px window, less with the sidebar open), so titles stay within TITLE_CHARS
# characters (about 400 px at TITLE_SIZE) and subtitles are wrapped between their " · " parts into lines of at
# most SUBTITLE_CHARS characters (about 420 px at FONT_SIZE).
TITLE_CHARS = 48
SUBTITLE_CHARS = 64
SUBTITLE_LINE_PX = 20  # height of one more subtitle line
TITLE_TOP_PX = 42  # where a title with a subtitle sits (its middle, from the top): Plotly's own choice, the middle
# of the top margin, would move it down half of every extra subtitle line and the subtitle into the plot
PRESENTER_SCALE = 1.25  # presenter mode (?present=1) sets the page's text at 20 px instead of 16: charts follow


@lru_cache(maxsize=1)
def _all_colors() -> tuple[str, ...]:
    colors = list(FIXED_COLORS)
    golden = (math.sqrt(5) - 1) / 2  # 0.618...: each new hue lands in the largest gap left
    levels = ((0.75, 0.80), (0.55, 0.95), (0.90, 0.60))  # (saturation, value) cycled so neighbours differ
    i = 0
    while len(colors) < MAX_EXPERTS:
        hue = (0.07 + i * golden) % 1.0
        s, v = levels[i % len(levels)]
        r, g, b = colorsys.hsv_to_rgb(hue, s, v)
        colors.append(f"#{round(r * 255):02X}{round(g * 255):02X}{round(b * 255):02X}")
        i += 1
    return tuple(colors)


def expert_colors(n_experts: int) -> list[str]:
    """Hex colours "#RRGGBB" of experts 0..n_experts-1 (1..256); expert e's colour never depends on n_experts."""
    if not 1 <= n_experts <= MAX_EXPERTS:
        raise ValueError(f"n_experts={n_experts!r} is out of range: allowed 1..{MAX_EXPERTS}")
    return list(_all_colors()[:n_experts])


def colorscale(name: str) -> list[list]:
    """A plotly.py named colour scale ("Blues", "Viridis", "RdBu_r", ...) as explicit [position, colour] pairs.

    Builders skip plotly.py's validation, which is what normally expands names; plotly.js has its own,
    different scales under some of the same names (its "Blues" runs from dark to light), so always expand.
    """
    import plotly.colors

    return [[float(p), c] for p, c in plotly.colors.get_colorscale(name)]


def class_colors(n_classes: int) -> list[str]:
    """Colours of the predicted classes (prediction view); they repeat after 10 classes."""
    return [CLASS_COLORS[c % len(CLASS_COLORS)] for c in range(n_classes)]


def expert_name(e: int) -> str:
    """The short name every view prints for expert e: "E0", "E1", ..."""
    return f"E{int(e)}"


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """"#RRGGBB" -> (r, g, b) in 0..255."""
    c = color.lstrip("#")
    if len(c) != 6:
        raise ValueError(f"expected a colour like '#RRGGBB', got {color!r}")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def with_alpha(color: str, a: float) -> str:
    """"#RRGGBB" with opacity a (0..1) as a CSS "rgba(r,g,b,a)" string."""
    r, g, b = hex_to_rgb(color)
    return f"rgba({r},{g},{b},{min(1.0, max(0.0, float(a))):.3g})"


def text_color_on(color: str) -> str:
    """Near-black or white, whichever reads better on the background colour "#RRGGBB" (WCAG luminance)."""
    lin = [(v / 255) / 12.92 if v <= 10 else ((v / 255 + 0.055) / 1.055) ** 2.4 for v in hex_to_rgb(color)]
    luminance = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return "#111111" if luminance > 0.179 else "#FFFFFF"


def colored_name(e: int) -> str:
    """ "■E3" with the square in expert e's colour (HTML for Plotly text)."""
    return f"<span style='color:{_all_colors()[e]}'>■</span>{expert_name(e)}"


def tick_step(n: int, max_labels: int = MAX_TICK_LABELS) -> int:
    """The smallest step of NICE_STEPS (E0, E8, E16, ... rather than E0, E7, E14, ...) that names at most
    max_labels of n items."""
    need = max(1, math.ceil(n / max_labels))
    return next((s for s in NICE_STEPS if s >= need), need)


def expert_ticks(n_experts: int, colored: bool = False) -> dict:
    """Axis settings naming experts 0..E-1, thinned (tick_step) to at most MAX_TICK_LABELS labels.

    colored=True prefixes each name with a square in the expert's colour (HTML inside Plotly tick text), while
    every expert is labelled (E <= MAX_TICK_LABELS); thinned labels stay plain so they do not collide.
    """
    step = tick_step(n_experts)
    vals = list(range(0, n_experts, step))
    text = [colored_name(e) if colored and step == 1 else expert_name(e) for e in vals]
    return dict(tickmode="array", tickvals=vals, ticktext=text, range=[-0.5, n_experts - 0.5])


def thin_ticks(n: int, max_labels: int = 16) -> list[int]:
    """Every k-th index of range(n) so that at most max_labels remain (always starts at 0)."""
    return list(range(0, n, max(1, math.ceil(n / max_labels))))


def layer_label(layer: int, n_layers: int) -> str:
    """"layer 2 of 3" (1-based, as students count), or "" for a single-layer model."""
    return f"layer {layer + 1} of {n_layers}" if n_layers > 1 else ""


def join_parts(*parts: str) -> str:
    """Non-empty parts joined with " · "."""
    return " · ".join(p for p in parts if p)


def visible_length(text: str) -> int:
    """Characters of a Plotly text as shown: HTML tags (<br>, <span ...>, <sub>) do not count."""
    return len(re.sub(r"<[^>]*>", "", text))


def wrap_parts(text: str, width: int = SUBTITLE_CHARS) -> list[str]:
    """Lines of at most `width` visible characters (one word longer than that gets a line of its own): a
    " · "-joined text (join_parts) breaks between its parts; a part too long for a line of its own breaks
    between words, starting on the current line; an existing <br> always breaks."""
    lines: list[str] = []
    for block in re.split(r"<br\s*/?>", text):
        current = ""
        for part in block.split(" · "):
            sep = " · " if current else ""
            if visible_length(current + sep + part) <= width:
                current += sep + part
                continue
            if visible_length(part) <= width:  # the whole part on a new line
                lines.append(current)
                current = part
                continue
            for word in part.split(" "):  # word by word, continuing the current line
                if visible_length(current + sep + word) <= width or not current:
                    current += sep + word
                else:
                    lines.append(current)
                    current = word
                sep = " "
        lines.append(current)
    return [line for line in lines if line]


# plotly_white, trimmed to what our figures draw: its defaults for these trace types (an image trace has none) and
# its layout without the polar, ternary, 3-D and map subplots. Every chart carries its template to the browser, and
# the whole one is 7 KB; the trimmed one draws our figures the same (figtools.assert_valid checks the trace types).
TEMPLATE_TRACES = ("bar", "heatmap", "scatter", "table")
TEMPLATE_UNUSED_LAYOUT = ("polar", "ternary", "scene", "geo", "mapbox", "map")


@lru_cache(maxsize=1)
def _template_json() -> str:
    import plotly.io as pio

    white = pio.templates["plotly_white"].to_plotly_json()
    return json.dumps({"data": {t: white["data"][t] for t in TEMPLATE_TRACES},
                       "layout": {k: v for k, v in white["layout"].items() if k not in TEMPLATE_UNUSED_LAYOUT}})


def layout_dict(title: str, height: int = 400, subtitle: str = "") -> dict:
    """The common look as a plain layout dict (see base_layout); builders start from it. The subtitle is wrapped
    (wrap_parts) so that it fits a half-width chart; each extra line adds SUBTITLE_LINE_PX to the top margin and
    to the height, so the plot keeps its size. meta.subtitle keeps it unwrapped (presenter_fonts re-wraps it)."""
    title_dict: dict = dict(text=title, x=0.01, xanchor="left", font=dict(size=TITLE_SIZE))
    lines = wrap_parts(subtitle) if subtitle else []
    height = int(height) + SUBTITLE_LINE_PX * max(0, len(lines) - 1)
    if lines:
        title_dict["subtitle"] = dict(text="<br>".join(lines), font=dict(size=FONT_SIZE, color="#444"))
        title_dict.update(y=1 - TITLE_TOP_PX / height, yref="container", yanchor="middle")
    return dict(
        title=title_dict,
        height=height,
        template=json.loads(_template_json()),  # a fresh copy per figure
        font=dict(size=FONT_SIZE),
        hoverlabel=dict(font=dict(size=FONT_SIZE)),
        legend=dict(font=dict(size=FONT_SIZE), grouptitlefont=dict(size=FONT_SIZE)),
        showlegend=True,
        margin=dict(l=70, r=30, t=95 + SUBTITLE_LINE_PX * (len(lines) - 1) if lines else 60, b=60),
        uirevision=UIREVISION,
        **({"meta": {"subtitle": subtitle}} if lines else {}),
    )


def _scale_fonts(node, scale: float) -> None:
    """Multiply, in place, the size of every font dict (font, tickfont, textfont, ...) below node; the template
    is left alone. A table's row heights grow with its text."""
    if isinstance(node, list):
        for item in node:
            _scale_fonts(item, scale)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key == "template" or not isinstance(value, (dict, list)):
                continue
            if isinstance(value, dict) and key.endswith("font") and isinstance(value.get("size"), (int, float)):
                size = round(value["size"] * scale, 1)
                value["size"] = int(size) if size.is_integer() else size
            _scale_fonts(value, scale)
        if node.get("type") == "table":
            for part in ("header", "cells"):
                if isinstance(node.get(part, {}).get("height"), (int, float)):
                    node[part]["height"] = round(node[part]["height"] * scale)


def presenter_fonts(fig: go.Figure, scale: float = PRESENTER_SCALE) -> go.Figure:
    """A copy of fig with every text `scale` times larger, for a projector (the app's ?present=1).

    Like a zoom: margins, height (so the legend and the plot keep room for the larger text) and table rows grow
    by the same factor. The width is still the page's, so the subtitle is re-wrapped (from layout_dict's
    meta.subtitle) to the narrower budget SUBTITLE_CHARS / scale, the figure growing by any extra line.
    fig is not changed.
    """
    if not 0.5 <= scale <= 4:
        raise ValueError(f"scale={scale!r} is out of range: allowed 0.5..4")
    spec = fig.to_plotly_json()
    data, layout = spec.get("data", []), spec.get("layout", {})
    _scale_fonts(data, scale)
    _scale_fonts(layout, scale)
    layout.setdefault("font", {}).setdefault("size", round(FONT_SIZE * scale))
    margin = layout.get("margin", {})
    for side in ("l", "r", "t", "b"):
        if isinstance(margin.get(side), (int, float)):
            margin[side] = round(margin[side] * scale)
    extra = 0
    subtitle = layout.get("title", {}).get("subtitle", {})
    if subtitle.get("text"):
        text = layout.get("meta", {}).get("subtitle", subtitle["text"])  # unwrapped, when layout_dict made it
        lines = wrap_parts(text, int(SUBTITLE_CHARS / scale))
        extra = round(SUBTITLE_LINE_PX * scale * (len(lines) - len(re.split(r"<br\s*/?>", subtitle["text"]))))
        subtitle["text"] = "<br>".join(lines)
        if "t" in margin:
            margin["t"] += extra
    if isinstance(layout.get("height"), (int, float)):
        layout["height"] = round(layout["height"] * scale) + extra
        if subtitle.get("text") and layout["title"].get("yref") == "container":  # keep layout_dict's title place
            layout["title"]["y"] = 1 - TITLE_TOP_PX * scale / layout["height"]
    try:
        return go.Figure(data=data, layout=layout, _validate=False)
    except TypeError:  # a plotly without the private switch
        return go.Figure(data=data, layout=layout)


def base_layout(fig: go.Figure, title: str, height: int = 400, subtitle: str = "") -> go.Figure:
    """Apply the common look to any figure: projector-sized fonts (>= 14 px), a left-aligned title (and optional
    subtitle), tidy margins, legends on, a white template, and a constant uirevision so zoom and legend clicks
    survive redraws. Returns fig."""
    fig.update_layout(layout_dict(title, height, subtitle))
    return fig
