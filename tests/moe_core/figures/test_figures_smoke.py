"""Every builder on real Trainer snapshots (2-D classification, 1-D regression, language) and on crafted edge
cases, re-validated by plotly.py and serialized to JSON."""

from __future__ import annotations

import pytest
from figtools import assert_valid, crafted_snapshot

from moe_core import figures as F
from moe_core.figures.palette import SUBTITLE_CHARS, TITLE_CHARS, visible_length
from moe_core.layer.config import MoEConfig
from moe_core.training.datasets import DataConfig
from moe_core.training.models import ModelConfig
from moe_core.training.trainer import TrainConfig, Trainer

SNAPSHOT_BUILDERS = [F.expert_load, F.capacity_buffers, F.router_probabilities, F.specialization, F.co_activation,
                     F.sparsity_cost, F.top_tokens_figure]
CURVES = ["loss", "accuracy", "mse", "max_vio", "load_cv", "dropped_frac", "router_entropy", "load"]


def _every_figure(snap, history):
    for layer in range(len(snap.layers)):
        for mode in F.MODES:
            yield F.routing_map(snap, layer=layer, mode=mode)
        for build in SNAPSHOT_BUILDERS:
            yield build(snap, layer=layer) if build is not F.sparsity_cost else build(snap)
    yield F.training_curves(history, CURVES)
    yield F.training_curves(history, CURVES, log_y=True)


@pytest.fixture(scope="module", params=["spirals", "regimes", "tokens"])
def trained(request):
    if request.param == "tokens":
        model = ModelConfig(MoEConfig(n_experts=4, top_k=1, router="switch", capacity_factor=1.0), n_layers=2,
                            context=32, n_heads=2)
        t = Trainer(model, DataConfig(dataset="tokens", n_samples=200), TrainConfig(batch_size=4))
    else:
        moe = MoEConfig(n_experts=8, top_k=2, capacity_factor=1.0 if request.param == "spirals" else None)
        t = Trainer(ModelConfig(moe), DataConfig(dataset=request.param, n_samples=300), TrainConfig(batch_size=64))
    t.step(3)
    return t.snapshot(), t.history


def test_every_figure_from_a_real_snapshot_serializes(trained):
    snap, history = trained
    figures = list(_every_figure(snap, history))
    assert len(figures) >= 13
    for fig in figures:
        assert_valid(fig)
    html = F.probe_text_html(snap)
    assert html.startswith("<")
    if snap.task == "language":
        assert html.count('class="tok"') == len(snap.probe_text)


@pytest.mark.parametrize("kwargs", [
    dict(E=1, k=1), dict(E=2, k=1), dict(E=3, k=1, capacity=None), dict(E=64, k=8),
    dict(task="regression", one_d=True, capacity=None), dict(task="regression", G=4), dict(task="language", G=4),
    dict(router="expert_choice", capacity=None), dict(router="dense", capacity=None), dict(n_layers=2),
])
def test_every_figure_from_crafted_edge_cases(kwargs):
    snap = crafted_snapshot(**kwargs)
    import pandas as pd

    history = pd.DataFrame({"step": [1], "loss": [1.0], "load_0": [3.0]})
    for fig in _every_figure(snap, history):
        assert_valid(fig)
        assert fig.layout.uirevision and fig.layout.font.size >= 14
        assert_title_fits(fig)
    F.probe_text_html(snap)


def assert_title_fits(fig) -> None:
    """Plotly cuts a title at the figure's edge: titles stay within TITLE_CHARS, subtitle lines SUBTITLE_CHARS."""
    title = fig.layout.title
    assert visible_length(title.text or "") <= TITLE_CHARS, f"title too long for a half-width chart: {title.text!r}"
    for line in (title.subtitle.text or "").split("<br>"):
        assert visible_length(line) <= SUBTITLE_CHARS, f"subtitle line too long: {line!r}"


def test_every_title_fits_a_half_width_chart(trained):
    snap, history = trained
    for fig in [*_every_figure(snap, history), F.scaling_out(snap),
                *(F.training_curves(history, [m]) for m in CURVES)]:
        assert_title_fits(fig)


def test_builders_stay_pure():
    """No Streamlit, no Trainer, no torch in the figure package: data in, figures out."""
    from pathlib import Path

    import moe_core.figures

    for path in Path(moe_core.figures.__file__).parent.glob("*.py"):
        source = path.read_text()
        for banned in ("import streamlit", "from streamlit", "moe_core.training.trainer", "import torch"):
            assert banned not in source, f"{path.name} uses {banned!r}"
