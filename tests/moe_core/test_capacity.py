"""Capacity values and hand-counted drop decisions for both overflow policies."""

from __future__ import annotations

import pytest
import torch

from moe_core import MoEConfig, MoELayer, expert_capacity
from moe_core.layer.capacity import assign_slots


@pytest.mark.parametrize(
    "T, E, k, cf, expected",
    [
        (1000, 8, 2, 1.25, 313),  # reference §16: ceil(312.5); Mesh-TF would give 156, MegaBlocks 312
        (1000, 8, 1, 1.25, 157),  # ceil(156.25)
        (256, 8, 2, 1.0, 64),  # exactly the fair share
        (10, 11, 1, 1.1, 1),  # 1.1*10/11 = 1.0000000000000002 in floating point: still 1
        (8, 64, 1, 0.25, 1),  # never below one slot
        (4096, 64, 2, 2.0, 256),
        (7, 3, 2, 0.5, 3),  # ceil(2.333)
    ],
)
def test_expert_capacity_convention(T, E, k, cf, expected):
    assert expert_capacity(T, E, k, cf) == expected


def test_dropless_has_no_capacity():
    assert expert_capacity(1000, 8, 2, None) is None


# Four tokens, two experts, top-2, C = 2.  Token 3 lists expert 1 first.
HAND_INDEX = torch.tensor([[0, 1], [0, 1], [0, 1], [1, 0]])


def test_position_priority_hand_counted():
    # GShard order: first choices of t0, t1, t2, t3, then second choices of t0..t3.
    #   expert 0 queue: t0(1st) t1(1st) t2(1st) t3(2nd) -> keeps t0, t1
    #   expert 1 queue: t3(1st) t0(2nd) t1(2nd) t2(2nd) -> keeps t3, t0
    a = assign_slots(HAND_INDEX, n_experts=2, capacity=2)
    expected_kept = torch.tensor([[True, True], [True, False], [False, False], [True, False]])
    assert torch.equal(a.kept, expected_kept)
    assert a.tokens_per_expert.tolist() == [4, 4]
    assert a.kept_per_expert.tolist() == [2, 2]


def test_probability_priority_hand_counted():
    priority = torch.tensor([[0.6, 0.4], [0.5, 0.5], [0.9, 0.1], [0.7, 0.3]])
    #   expert 0 candidates: t2 .9, t0 .6, t1 .5, t3 .3 -> keeps t2, t0
    #   expert 1 candidates: t3 .7, t1 .5, t0 .4, t2 .1 -> keeps t3, t1
    a = assign_slots(HAND_INDEX, n_experts=2, capacity=2, priority=priority)
    expected_kept = torch.tensor([[True, False], [False, True], [True, False], [True, False]])
    assert torch.equal(a.kept, expected_kept)


def test_probability_ties_fall_back_to_position():
    priority = torch.full((4, 2), 0.5)
    by_prob = assign_slots(HAND_INDEX, 2, 2, priority=priority)
    by_pos = assign_slots(HAND_INDEX, 2, 2)
    assert torch.equal(by_prob.kept, by_pos.kept)


def test_unselected_slots_are_never_counted_or_kept():
    selected = torch.tensor([[True, False], [True, True], [False, True], [True, True]])
    a = assign_slots(HAND_INDEX, 2, capacity=None, selected=selected)
    assert torch.equal(a.kept, selected)
    assert a.tokens_per_expert.tolist() == [3, 3]  # expert 0: t0, t1, t3(2nd); expert 1: t1, t2, t3


def test_dispatch_order_is_grouped_by_expert():
    a = assign_slots(HAND_INDEX, 2, capacity=2)
    experts = HAND_INDEX[a.token_order, a.kept_pairs // HAND_INDEX.shape[0]]  # (token, slot) of each kept pair
    assert experts.tolist() == [0, 0, 1, 1]


def _layer_with_routing(cfg: MoEConfig, winner: torch.Tensor) -> tuple[MoELayer, torch.Tensor]:
    """A layer whose router sends token t's first choice to winner[t]: x is one-hot on the winner's axis."""
    torch.manual_seed(0)
    layer = MoELayer(cfg)
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[:, : cfg.n_experts] = 5 * torch.eye(cfg.n_experts)
    x = torch.zeros(len(winner), cfg.d_model)
    x[torch.arange(len(winner)), winner] = 1.0
    x[:, cfg.n_experts :] = torch.randn(len(winner), cfg.d_model - cfg.n_experts)
    return layer, x


def test_overflowing_tokens_get_zero_output_and_keep_their_residual():
    # top-1, 6 tokens all wanting expert 0, E = 3: C = ceil(1.0 * 1 * 6 / 3) = 2
    cfg = MoEConfig(d_model=8, n_experts=3, top_k=1, expert_hidden=4, capacity_factor=1.0)
    layer, x = _layer_with_routing(cfg, torch.zeros(6, dtype=torch.long))
    y, info = layer(x)
    assert info.capacity == 2
    assert info.tokens_per_expert.tolist() == [6, 0, 0]
    assert info.kept_per_expert.tolist() == [2, 0, 0]
    assert info.dropped[:, 0].tolist() == [False, False, True, True, True, True]  # first come, first served
    assert torch.all(y[2:] == 0), "a dropped token's MoE output is exactly zero"
    assert torch.all(y[:2].abs().sum(-1) > 0)
    assert torch.all(info.combine_weights[2:] == 0)


def test_no_renormalization_after_a_drop():
    cfg = MoEConfig(d_model=8, n_experts=2, top_k=2, expert_hidden=4, capacity_factor=0.5)
    layer, x = _layer_with_routing(cfg, torch.tensor([0, 0, 1, 0]))
    _, info = layer(x)
    dropped_some = info.dropped.any(dim=1)
    assert dropped_some.any()
    sums = info.combine_weights.sum(dim=1)
    assert torch.all(sums[dropped_some] < 1 - 1e-6), "surviving weights are not scaled back up to 1"
    probs = info.router_probs.gather(1, info.expert_index)
    kept = ~info.dropped
    renormalized_before_drop = probs / probs.sum(1, keepdim=True)
    torch.testing.assert_close(info.combine_weights[kept], renormalized_before_drop[kept])


@pytest.mark.parametrize("router", ["hash", "expert_choice", "soft", "dense"])
def test_routers_that_never_drop(router):
    cfg = MoEConfig(d_model=16, n_experts=8, top_k=2, expert_hidden=8, capacity_factor=0.25, router=router)
    torch.manual_seed(0)
    layer = MoELayer(cfg)
    _, info = layer(torch.randn(64, 16))
    assert not info.dropped.any()
    assert torch.equal(info.kept_per_expert, info.tokens_per_expert)


def test_expert_choice_fills_every_expert_exactly():
    cfg = MoEConfig(d_model=16, n_experts=4, top_k=2, expert_hidden=8, capacity_factor=1.0, router="expert_choice")
    torch.manual_seed(0)
    _, info = MoELayer(cfg)(torch.randn(32, 16))
    assert info.capacity == 16  # ceil(1.0 * 2 * 32 / 4)
    assert info.tokens_per_expert.tolist() == [16] * 4
    assert info.selected.sum(0).tolist() == [16] * 4
