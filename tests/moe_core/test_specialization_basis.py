"""The specialization table and I(expert; group) where every expert runs: counted by first choice, not by slot.

With the dense router (lesson 1) every token keeps a slot on every expert, so a table of routing slots is
uniform and its mutual information 0 however sharply the gate splits the line; the snapshot counts each
token's first choice (top-1 router probability) instead, as the routing map and the lesson checks do.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from moe_core.layer import metrics
from moe_core.lessons.checks import ownership
from moe_core.training.settings import PlaygroundSettings
from moe_core.training.snapshot import group_counts
from moe_core.training.trainer import Trainer


def _trained(steps: int, **settings) -> Trainer:
    trainer = Trainer(*PlaygroundSettings(**settings).to_configs())
    trainer.step(steps)
    return trainer


def test_dense_router_specialization_follows_the_first_choice():
    # lesson 1, steps 3-4: regimes, dense router, 4 experts of width 8, no balancing loss
    t = _trained(300, dataset="regimes", router="dense", n_experts=4, expert_hidden=8, aux_loss_coef=0.0)
    shares = ownership(t)  # (regimes, E) share of each regime's test points whose top-1 is each expert
    assert np.ptp(shares, axis=0).max() > 0.1, "precondition: the first choice already depends on the regime"
    view = t.snapshot(grid_size=8).layers[0]
    assert view.group_counts_basis == "first_choice"
    counts = np.asarray(view.group_expert_counts, dtype=float)
    np.testing.assert_allclose(counts / counts.sum(axis=1, keepdims=True), shares)
    assert not np.allclose(counts / counts.sum(axis=1, keepdims=True), 1 / 4), "not the uniform slot table"
    assert view.mutual_information > 0.02  # measured 0.08 nats after 300 steps (the slot table gives 0)
    assert view.mutual_information == pytest.approx(metrics.mutual_information(torch.as_tensor(counts)))


@pytest.mark.parametrize("top_k, basis", [(4, "first_choice"), (2, "slots")])
def test_top_k_counts_slots_unless_every_expert_runs(top_k, basis):
    t = _trained(3, n_experts=4, top_k=top_k, batch_size=64, expert_hidden=8)
    with torch.no_grad():
        t.model.eval()
        _, infos = t.model(t.tensors.x_test)
    info, groups = infos[0], t.tensors.group_test
    counts, got = group_counts(info, groups, t.dataset.n_groups)
    assert got == basis
    if basis == "slots":
        expected = metrics.expert_label_counts(info.expert_index, groups, 4, t.dataset.n_groups,
                                               info.selected & ~info.dropped)
    else:
        expected = metrics.expert_label_counts(info.router_probs.argmax(-1, keepdim=True), groups, 4,
                                               t.dataset.n_groups)
        assert counts.sum() == len(groups), "one count per test point"
    assert torch.equal(counts, expected)
    assert t.snapshot(grid_size=8).layers[0].group_counts_basis == basis


def test_characters_by_expert_use_the_first_choice_when_every_expert_runs():
    t = _trained(30, dataset="tokens", router="dense", n_experts=4)
    view = t.snapshot().layers[0]
    assert len(set(view.probe_text_experts.tolist())) > 1, "the dense router's characters are not all E0"
    assert sum(1 for tokens in view.top_tokens if tokens) > 1, "more than one expert lists characters"
