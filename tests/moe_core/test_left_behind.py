"""Tokens left behind (kept no slot): metrics.left_behind_count against a slow, obvious reference, on random
masks and on real routers' output, and what the snapshot records for the load view and the headline."""

from __future__ import annotations

import pytest
import torch

from moe_core.layer import metrics
from moe_core.layer.config import MoEConfig
from moe_core.layer.moe_layer import MoELayer
from moe_core.training.settings import PlaygroundSettings
from moe_core.training.trainer import Trainer


def slow_left_behind(dropped: torch.Tensor, selected: torch.Tensor) -> int:
    """Token by token: left behind when none of its slots is both selected and not dropped."""
    count = 0
    for t in range(dropped.shape[0]):
        if not any(bool(selected[t, j]) and not bool(dropped[t, j]) for j in range(dropped.shape[1])):
            count += 1
    return count


@pytest.mark.parametrize("seed", range(20))
def test_count_matches_the_token_by_token_reference_on_random_masks(seed):
    g = torch.Generator().manual_seed(seed)
    T, K = int(torch.randint(1, 40, (1,), generator=g)), int(torch.randint(1, 6, (1,), generator=g))
    selected = torch.rand(T, K, generator=g) < 0.5
    dropped = (torch.rand(T, K, generator=g) < 0.4) & selected
    assert metrics.left_behind_count(dropped, selected) == slow_left_behind(dropped, selected)
    assert metrics.tokens_left_behind(dropped, selected) == pytest.approx(slow_left_behind(dropped, selected) / T)


def test_no_selection_means_every_slot_selected_and_an_empty_batch_leaves_nobody():
    dropped = torch.tensor([[True, True], [True, False], [False, False]])
    assert metrics.left_behind_count(dropped) == 1  # token 0 lost both slots
    assert metrics.left_behind_count(torch.zeros(0, 2, dtype=torch.bool)) == 0


@pytest.mark.parametrize("capacity_factor", [0.5, 1.0, None])
def test_expert_choice_leaves_behind_exactly_the_tokens_no_expert_picked(capacity_factor):
    torch.manual_seed(0)
    cfg = MoEConfig(d_model=8, n_experts=4, top_k=1, expert_hidden=8, router="expert_choice",
                    capacity_factor=capacity_factor)
    layer = MoELayer(cfg)
    x = torch.randn(64, 8)
    _, info = layer(x)
    picked_by = [[e for e in range(4) if bool(info.selected[t, e])] for t in range(64)]  # slot e is expert e
    reference = sum(1 for experts in picked_by if not experts)
    assert metrics.left_behind_count(info.dropped, info.selected) == reference
    assert info.kept_per_expert.sum() == info.tokens_per_expert.sum(), "expert choice drops nothing"
    if capacity_factor == 0.5:  # 4 experts x C = 8 picks for 64 tokens: at least 32 tokens are left behind
        assert reference >= 32


def test_the_snapshot_records_the_last_batch_left_behind():
    model, data, train = PlaygroundSettings(router="expert_choice", n_experts=4, top_k=1, capacity_factor=0.5,
                                            batch_size=64, expert_hidden=16).to_configs()
    trainer = Trainer(model, data, train)
    trainer.step(2)
    info = trainer.last_infos[0]
    view = trainer.snapshot(grid_size=8).layers[0]
    assert view.left_behind == slow_left_behind(info.dropped, info.selected) > 0
    model, data, train = PlaygroundSettings(n_experts=4, top_k=2, batch_size=64, expert_hidden=16).to_configs()
    dropless = Trainer(model, data, train)
    dropless.step(1)
    assert dropless.snapshot(grid_size=8).layers[0].left_behind == 0, "dropless token choice leaves nobody behind"
