"""Snapshot contents that the views rely on."""

from __future__ import annotations

import numpy as np
import torch

from moe_core.figures.routing_map import map_scores
from moe_core.training.settings import PlaygroundSettings
from moe_core.training.trainer import Trainer


def _trainer(**settings) -> Trainer:
    model, data, train = PlaygroundSettings(**{"batch_size": 64, "expert_hidden": 16, **settings}).to_configs()
    return Trainer(model, data, train)


def test_sigmoid_bias_map_shows_where_tokens_really_go():
    t = _trainer(router="sigmoid_bias", n_experts=4, top_k=1)
    t.step(3)
    with torch.no_grad():
        t.moe_layers[0].router.bias.copy_(torch.tensor([10.0, 0.0, 0.0, 0.0]))  # everything to expert 0
    view = t.snapshot(grid_size=12).layers[0]
    assert view.grid_selection is not None
    assert (map_scores(view).argmax(-1) == 0).all(), "the map follows the biased selection"
    assert (view.grid_top2[..., 0] == 0).all()
    assert not (view.grid_probs.argmax(-1) == 0).all(), "the unbiased preference alone would differ"


def test_probe_selection_is_exact_for_expert_choice():
    t = _trainer(router="expert_choice", n_experts=4, top_k=1, capacity_factor=0.5)
    t.step(2)
    view = t.snapshot(grid_size=8).layers[0]
    assert view.probe_selected.shape == view.probe_combine.shape
    assert not view.probe_selected.all(), "with C < T some tokens are picked by no expert"
    assert np.array_equal(view.probe_selected, view.probe_combine > 0)


def test_language_probe_rows_carry_their_characters_and_domains():
    t = _trainer(dataset="tokens", router="switch", top_k=1, n_experts=4)
    t.step(2)
    snap = t.snapshot()
    view = snap.layers[0]
    assert len(view.probe_tokens) == view.probe_probs.shape[0]
    assert snap.probe_group is not None and len(snap.probe_group) == len(view.probe_tokens)
