"""Views of a pretrained MoE model's routing (the Real models page), built from moe_core.real_models' records
with the Playground's palette and building blocks: the same expert colours, fair-share line, share colour scale
and layout, so a real model's figures read like the toy's.

- tokens_html: the text coloured by each token's first-choice expert, as in Mixtral's Fig. 8 (Jiang et al. 2024,
  arXiv:2401.04088, §5); hover shows its top-k experts and gate weights.
- load_bars: slots per expert in one layer against the fair share k·T/E, with MaxVio (Wang et al. 2024).
- layer_profile: router entropy and MaxVio per layer.
- load_heatmap: layer x expert share of the routing slots.
- co_activation: P(j also chosen | i chosen) in one layer (OLMoE, Muennighoff et al. 2024, §5).
- specialisation / mi_by_layer: the shipped multi-domain sample, domain x expert, and I(expert; domain) per layer.
"""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go

from moe_core.figures.common import make_figure
from moe_core.figures.language import BACKGROUND_ALPHA, VISIBLE
from moe_core.figures.load import FAIR_COLOR, HEIGHT, Y_HEADROOM, _line
from moe_core.figures.palette import (
    NEUTRAL_COLOR,
    expert_colors,
    expert_name,
    expert_ticks,
    join_parts,
    layout_dict,
    with_alpha,
)
from moe_core.figures.specialization import MAX_TEXT_COLUMNS, SHARE_SCALE, normalized_counts
from moe_core.real_models.routing import LayerRouting, Routing, Specialisation


def _layer_name(lr: LayerRouting, n_layers: int) -> str:
    return f"decoder layer {lr.layer}"


def token_title(lr: LayerRouting, t: int) -> str:
    """'E3 0.62 · E5 0.21': the token's k experts, first choice first, with the gate weights the model applies
    (and, for Qwen2-MoE, the shared expert's own gate)."""
    parts = [f"{expert_name(e)} {w:.2f}" for e, w in zip(lr.experts[t], lr.weights[t], strict=True)]
    if lr.shared_gate is not None:
        parts.append(f"shared expert {lr.shared_gate[t]:.2f}")
    return " · ".join(parts)


def tokens_html(routing: Routing, index: int) -> str:
    """The text, one <span class="tok"> per token, background = its first-choice expert's colour (light),
    underline = the full colour; the title (hover) lists its top-k experts and gate weights. HTML-escaped;
    newlines show as ⏎ and break the line."""
    lr = routing.layers[index]
    colors = expert_colors(routing.n_experts)
    parts = []
    for t, token in enumerate(routing.tokens):
        e = int(lr.experts[t, 0])
        shown = "".join(VISIBLE.get(c, c) if c != " " else " " for c in token)
        title = f"{token!r} → {token_title(lr, t)}"
        parts.append(f'<span class="tok" style="background:{with_alpha(colors[e], BACKGROUND_ALPHA)};'
                     f'border-bottom:3px solid {colors[e]}" title="{html.escape(title)}">{html.escape(shown)}</span>')
        if "\n" in token:
            parts.append("<br>")
    style = ("font-family:ui-monospace,Menlo,Consolas,monospace;font-size:18px;line-height:2;white-space:pre-wrap;"
             "word-break:break-all")
    return f'<div class="moe-real-tokens" style="{style}">{"".join(parts)}</div>'


def load_bars(routing: Routing, index: int) -> go.Figure:
    """Routing slots per expert in one layer (bar colour = expert) against the fair share k·T/E."""
    lr = routing.layers[index]
    s = lr.summary()
    load = np.asarray(s["load"])
    E, T, k = routing.n_experts, len(routing.tokens), routing.top_k
    fair = s["fair_share"]
    data = [dict(type="bar", x=np.arange(E), y=load, name="slots (colour = expert)", marker=dict(
                 color=expert_colors(E), line=dict(width=0)), hovertemplate="E%{x}: %{y} slots<extra></extra>"),
            _line(fair, E, f"fair share k·T/E = {fair:.4g}", "dash", FAIR_COLOR)]
    sub = join_parts(f"T = {T} tokens, k = {k} → {T * k} slots", _layer_name(lr, len(routing.layers)),
                     routing.model.rsplit("/", 1)[-1])
    layout = layout_dict(f"Tokens per expert: MaxVio = {s['max_violation']:.2f}", HEIGHT, sub)
    layout.update(bargap=0.15, xaxis=dict(title=dict(text="expert"), **expert_ticks(E, colored=True)),
                  yaxis=dict(title=dict(text="routing slots"), range=[0, max(float(load.max()), fair, 1) * Y_HEADROOM]),
                  legend=dict(orientation="h", y=-0.2))
    return make_figure(data, layout)


def layer_profile(routing: Routing) -> go.Figure:
    """Router entropy (nats, max ln E) and MaxVio of every MoE layer, side by side on two y axes."""
    layers = [lr.layer for lr in routing.layers]
    sums = [lr.summary() for lr in routing.layers]
    E = routing.n_experts
    data = [dict(type="scatter", x=layers, y=[s["router_entropy"] for s in sums], mode="lines+markers",
                 name="router entropy (nats)", line=dict(color=expert_colors(1)[0], width=2.5),
                 hovertemplate="layer %{x}: entropy %{y:.3f} nats<extra></extra>"),
            dict(type="scatter", x=layers, y=[s["max_violation"] for s in sums], mode="lines+markers", yaxis="y2",
                 name="MaxVio", line=dict(color=NEUTRAL_COLOR, width=2, dash="dot"),
                 hovertemplate="layer %{x}: MaxVio %{y:.2f}<extra></extra>"),
            dict(type="scatter", x=[min(layers), max(layers)], y=[math.log(E)] * 2, mode="lines",
                 name=f"max entropy ln E = {math.log(E):.2f}", line=dict(color=FAIR_COLOR, dash="dash", width=1.5),
                 hoverinfo="name")]
    layout = layout_dict("Router entropy and MaxVio per layer", HEIGHT,
                         "entropy: mean over tokens of −Σ p ln p · MaxVio = max load / mean load − 1")
    layout.update(xaxis=dict(title=dict(text="decoder layer"), tickmode="array", tickvals=layers),
                  yaxis=dict(title=dict(text="entropy (nats)"), rangemode="tozero"),
                  yaxis2=dict(title=dict(text="MaxVio"), overlaying="y", side="right", rangemode="tozero",
                              showgrid=False),
                  legend=dict(orientation="h", y=-0.2))
    return make_figure(data, layout)


def load_heatmap(routing: Routing) -> go.Figure:
    """Layer x expert: each layer's share of routing slots per expert (fair = 1/E)."""
    loads = np.array([lr.load() for lr in routing.layers], dtype=np.float64)
    z = normalized_counts(loads, "row")
    E = routing.n_experts
    layers = [lr.layer for lr in routing.layers]
    trace = dict(type="heatmap", z=z, x=np.arange(E), y=np.arange(len(layers)), colorscale=SHARE_SCALE, zmin=0.0,
                 xgap=1 if E <= 32 else 0, ygap=1, showlegend=False, name="load",
                 customdata=np.repeat(np.array(layers)[:, None], E, axis=1),
                 colorbar=dict(title=dict(text="share", side="right"), thickness=14),
                 hovertemplate="layer %{customdata}, E%{x}: %{z:.3f} of the slots<extra></extra>")
    layout = layout_dict("Load by layer and expert", HEIGHT + 30,
                         join_parts("share of each layer's slots", f"fair share 1/E = {1 / E:.3g}"))
    layout.update(xaxis=dict(title=dict(text="expert"), showgrid=False, **expert_ticks(E, colored=True)),
                  yaxis=dict(title=dict(text="decoder layer"), tickmode="array", tickvals=list(range(len(layers))),
                             ticktext=[str(x) for x in layers], autorange="reversed", showgrid=False))
    return make_figure([trace], layout)


def co_activation(routing: Routing, index: int) -> go.Figure:
    """E x E heatmap of P(expert j also chosen | expert i chosen) in one layer (diagonal left blank)."""
    lr = routing.layers[index]
    z = lr.co_activation().astype(np.float64)
    np.fill_diagonal(z, np.nan)
    E = routing.n_experts
    trace = dict(type="heatmap", x=np.arange(E), y=np.arange(E), z=z, colorscale=SHARE_SCALE, zmin=0.0, zmax=1.0,
                 xgap=1 if E <= 32 else 0, ygap=1 if E <= 32 else 0, hoverongaps=False, showlegend=False,
                 name="co-activation", colorbar=dict(title=dict(text="P(j | i)", side="right"), thickness=14),
                 hovertemplate="token chose E%{y}: also chose E%{x} with p = %{z:.2f}<extra></extra>")
    if E <= MAX_TEXT_COLUMNS:
        trace.update(texttemplate="%{z:.2f}", textfont=dict(size=13))
    layout = layout_dict("Which experts fire together", HEIGHT + 30,
                         join_parts("row i: how often a token that chose i also chose j",
                                    _layer_name(lr, len(routing.layers))))
    layout.update(xaxis=dict(title=dict(text="also chose expert j"), showgrid=False, constrain="domain",
                             **expert_ticks(E, colored=True)),
                  yaxis=dict(title=dict(text="token chose expert i"), showgrid=False, scaleanchor="x",
                             constrain="domain", **{**expert_ticks(E, colored=True), "range": [E - 0.5, -0.5]}))
    return make_figure([trace], layout)


def specialisation(spec: Specialisation, index: int) -> go.Figure:
    """Domain x expert share of each domain's routing slots in one layer, I(expert; domain) in the title."""
    counts = spec.counts[index]
    G, E = counts.shape
    z = normalized_counts(counts, "row")
    trace = dict(type="heatmap", x=np.arange(E), y=np.arange(G), z=z, colorscale=SHARE_SCALE, zmin=0.0,
                 xgap=1 if E <= 32 else 0, ygap=1, showlegend=False, name="specialisation",
                 customdata=np.repeat(np.array(spec.domains, dtype=object)[:, None], E, axis=1),
                 colorbar=dict(title=dict(text="share", side="right"), thickness=14),
                 hovertemplate="%{customdata} → E%{x}: %{z:.2f}<extra></extra>")
    mi = spec.mutual_information[index]
    layout = layout_dict(f"I(expert; domain) = {mi:.2f} nats", HEIGHT,
                         join_parts("share of each domain's slots (shipped sample)",
                                    f"0 = no specialisation, max {math.log(min(G, E)):.2f}",
                                    f"decoder layer {spec.layers[index]}"))
    layout.update(xaxis=dict(title=dict(text="expert"), showgrid=False, **expert_ticks(E, colored=True)),
                  yaxis=dict(tickmode="array", tickvals=list(range(G)), ticktext=spec.domains, autorange="reversed",
                             title=dict(text="domain"), showgrid=False))
    return make_figure([trace], layout)


def mi_by_layer(spec: Specialisation) -> go.Figure:
    """I(expert; domain) of the shipped sample in every MoE layer."""
    G = len(spec.domains)
    data = [dict(type="bar", x=spec.layers, y=spec.mutual_information, name="I(expert; domain)",
                 marker=dict(color=expert_colors(1)[0]), hovertemplate="layer %{x}: %{y:.3f} nats<extra></extra>")]
    layout = layout_dict("Specialisation per layer", HEIGHT,
                         join_parts("I(expert; domain) in nats, shipped sample", f"max ln {G} = {math.log(G):.2f}"))
    layout.update(xaxis=dict(title=dict(text="decoder layer"), tickmode="array", tickvals=spec.layers),
                  yaxis=dict(title=dict(text="nats"), rangemode="tozero"), showlegend=False)
    return make_figure(data, layout)
