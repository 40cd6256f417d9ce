"""The Real models figures: valid Plotly, the Playground's expert colours, and the numbers they are drawn from."""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest

from moe_core.figures import real_models as fig
from moe_core.figures.palette import expert_colors, with_alpha
from moe_core.real_models import load_model, route_text, specialisation

TEXT = "<b>x</b> & y\nDas Rad."


@pytest.fixture(scope="module")
def routed(tiny_models, tiny_policy):
    loaded = load_model(str(tiny_models["deepseek_v3"]), tiny_policy)
    return route_text(loaded, TEXT), specialisation(loaded)


def test_every_figure_is_valid_plotly(routed):
    routing, spec = routed
    for f in (fig.load_bars(routing, 0), fig.co_activation(routing, 1), fig.layer_profile(routing),
              fig.load_heatmap(routing), fig.specialisation(spec, 0), fig.mi_by_layer(spec)):
        go.Figure(f.to_plotly_json())  # validates every property


def test_tokens_are_coloured_by_first_choice_and_escaped(routed):
    routing, _ = routed
    html = fig.tokens_html(routing, 0)
    assert "<b>" not in html and "</b" not in html and "&lt;" in html and "⏎" in html and "<br>" in html
    lr = routing.layers[0]
    colors = expert_colors(routing.n_experts)
    spans = html.split('<span class="tok"')[1:]
    assert len(spans) == len(routing.tokens)
    for t, span in enumerate(spans):
        assert with_alpha(colors[int(lr.experts[t, 0])], 0.35) in span
        assert fig.token_title(lr, t) in span.replace("&#x27;", "'")


def test_load_bars_and_heatmap_numbers(routed):
    routing, _ = routed
    lr = routing.layers[1]
    bars = fig.load_bars(routing, 1)
    assert list(bars.data[0].y) == lr.load().tolist()
    assert f"MaxVio = {lr.summary()['max_violation']:.2f}" in bars.layout.title.text
    heat = np.asarray(fig.load_heatmap(routing).data[0].z)
    np.testing.assert_allclose(heat.sum(axis=1), 1.0)


def test_specialisation_title_is_the_mutual_information(routed):
    _, spec = routed
    f = fig.specialisation(spec, 1)
    assert f.layout.title.text == f"I(expert; domain) = {spec.mutual_information[1]:.2f} nats"
    assert list(f.layout.yaxis.ticktext) == spec.domains
    assert max(fig.mi_by_layer(spec).data[0].y) <= math.log(4)
