"""Tests for moe_core.layer.metrics. Expected values come from the routing reference §16 or are derived by hand
(the arithmetic is written next to each) or from a naive independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_core.layer.config import MoEConfig
from moe_core.layer.metrics import (
    co_activation,
    cv_squared,
    dropped_fraction,
    expert_capacity,
    expert_label_counts,
    flops_per_token,
    load_balancing_loss,
    load_cv,
    load_summary,
    max_violation,
    mutual_information,
    parameter_counts,
    router_entropy,
    tokens_left_behind,
    usage_entropy,
    z_loss,
)

PROPS = settings(max_examples=50, deadline=None)
counts_st = st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=64)


def test_expert_capacity_is_reexported():
    # §12.3: ceil(1.25 * 2 * 1000 / 8) = ceil(312.5) = 313; None = dropless
    assert expert_capacity(1000, 8, 2, 1.25) == 313
    assert expert_capacity(1000, 8, 2, None) is None


# -- z-loss -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("E, expected", [(8, 4.324077), (64, 17.296309)])
def test_z_loss_zero_logits_is_ln_e_squared(E, expected):
    assert z_loss(torch.zeros(5, E)).item() == pytest.approx(expected, abs=1e-5)
    assert z_loss(torch.zeros(5, E)).item() == pytest.approx(math.log(E) ** 2, rel=1e-6)


def test_z_loss_hand_value_and_grad():
    # token 0: logsumexp(0, ln 3) = ln 4; token 1: logsumexp(0, 0) = ln 2 -> mean((ln 4)², (ln 2)²)
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]], requires_grad=True)
    loss = z_loss(logits)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx((math.log(4) ** 2 + math.log(2) ** 2) / 2, rel=1e-6)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


# -- load-balancing loss ------------------------------------------------------------------------------------
@pytest.mark.parametrize("counts", [[16, 0, 0, 0], [4, 4, 4, 4], [1, 2, 3, 10], [0, 0, 7, 9]])
def test_switch_loss_uniform_probs_is_one_for_any_counts(counts):
    # E/(kT)·Σ c_i·(1/E) = Σc/(kT) = 1 since Σc = kT (T = 8, k = 2)
    probs = torch.full((8, 4), 0.25)
    assert load_balancing_loss(probs, torch.tensor(counts), top_k=2).item() == pytest.approx(1.0)


def test_switch_loss_balanced_counts_is_one_for_any_probs():
    # counts = kT/E for all i: E/(kT)·(kT/E)·ΣP = ΣP = 1
    probs = torch.softmax(torch.randn(12, 6, generator=torch.Generator().manual_seed(0)), dim=-1)
    counts = torch.full((6,), 12 * 2 / 6)
    assert load_balancing_loss(probs, counts, top_k=2).item() == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("E", [4, 8, 64])
def test_switch_loss_collapse_is_about_e(E):
    T = 10
    logits = torch.zeros(T, E)
    logits[:, 0] = 30.0  # p ≈ one-hot on expert 0
    counts = torch.zeros(E)
    counts[0] = T
    loss = load_balancing_loss(torch.softmax(logits, -1), counts, top_k=1)
    assert loss.item() == pytest.approx(E, rel=1e-4)


def test_switch_loss_gradient_only_through_probs():
    T, E, k = 6, 3, 2
    probs = torch.softmax(torch.randn(T, E, generator=torch.Generator().manual_seed(1)), -1)
    probs.requires_grad_(True)
    counts = torch.tensor([5.0, 4.0, 3.0], requires_grad=True)
    loss = load_balancing_loss(probs, counts, top_k=k)
    loss.backward()
    assert counts.grad is None
    # dL/dp[t, i] = E/(kT) · c_i / T, the same for every token
    expected = (E / (k * T) * counts.detach() / T).expand(T, E)
    torch.testing.assert_close(probs.grad, expected)


# -- CV², CV, MaxVio -----------------------------------------------------------------------------------------
def test_cv_squared_vectors():
    assert cv_squared(torch.tensor([1.0, 1.0, 1.0, 1.0])).item() == pytest.approx(0.0, abs=1e-12)
    # mean 1, population variance (9 + 1 + 1 + 1)/4 = 3 (the unbiased estimator would give 4)
    assert cv_squared(torch.tensor([4.0, 0.0, 0.0, 0.0])).item() == pytest.approx(3.0, rel=1e-6)
    assert cv_squared(torch.tensor([4, 0, 0, 0])).item() == pytest.approx(3.0, rel=1e-6)
    assert cv_squared(torch.tensor([5.0])).item() == 0.0


def test_cv_squared_is_differentiable():
    x = torch.tensor([3.0, 1.0], requires_grad=True)
    # mean 2, var_pop 1 -> 1/4
    out = cv_squared(x)
    assert out.item() == pytest.approx(0.25, rel=1e-6)
    out.backward()
    assert x.grad is not None and x.grad[0] > 0 > x.grad[1]


def test_load_cv_vectors():
    assert load_cv(torch.tensor([10, 10, 10, 10])) == 0.0
    collapse = torch.tensor([80, 0, 0, 0, 0, 0, 0, 0])
    assert load_cv(collapse) == pytest.approx(math.sqrt(7))  # §13: top-1 collapse gives √(E−1)
    assert load_cv(torch.zeros(4)) == 0.0


def test_max_violation_vectors():
    assert max_violation(torch.tensor([10, 10, 10, 10])) == 0.0
    assert max_violation(torch.tensor([40, 0, 0, 0])) == pytest.approx(3.0)
    assert max_violation(torch.tensor([16, 0, 0, 0, 0, 0, 0, 0])) == pytest.approx(7.0)
    assert max_violation(torch.tensor([3, 1])) == pytest.approx(0.5)  # 3/2 − 1
    assert max_violation(torch.zeros(4)) == 0.0


@PROPS
@given(counts_st)
def test_balance_metrics_nonnegative(counts):
    c = torch.tensor(counts)
    assert max_violation(c) >= 0.0
    assert load_cv(c) >= 0.0


@PROPS
@given(st.lists(st.floats(min_value=0, max_value=1000, allow_subnormal=False), min_size=1, max_size=64))
def test_load_summary_agrees_with_numpy_formulas(load):
    c = np.asarray(load, dtype=np.float64)  # the obvious formulas, on whole arrays
    if c.mean() == 0:
        want = (0.0, 0.0, 0.0)
    else:
        u = c[c > 0] / c.sum()
        want = (c.std() / c.mean(), c.max() / c.mean() - 1.0, -(u * np.log(u)).sum())
    c64 = torch.tensor(load, dtype=torch.float64)
    for got in (load_summary(load), (load_cv(c64), max_violation(c64), usage_entropy(c64))):
        cv, vio, usage = got
        assert cv == pytest.approx(want[0], rel=1e-5, abs=1e-9)
        assert vio == pytest.approx(want[1], rel=1e-5, abs=1e-9)
        assert usage == pytest.approx(want[2], rel=1e-5, abs=1e-9)


# -- dropping -----------------------------------------------------------------------------------------------
DROPPED = torch.tensor([[False, True], [False, False], [True, True]])


def test_dropped_fraction():
    assert dropped_fraction(DROPPED) == pytest.approx(3 / 6)
    selected = torch.tensor([[True, True], [True, True], [False, False]])
    assert dropped_fraction(DROPPED, selected) == pytest.approx(1 / 4)  # only slot (0, 1) of 4 selected
    assert dropped_fraction(DROPPED, torch.zeros_like(DROPPED)) == 0.0


def test_tokens_left_behind():
    assert tokens_left_behind(DROPPED) == pytest.approx(1 / 3)  # token 2 lost both slots
    # token 2 has no selected slot: still left behind
    selected = torch.tensor([[True, True], [True, True], [False, False]])
    assert tokens_left_behind(DROPPED, selected) == pytest.approx(1 / 3)
    # token 0's only selected slot is dropped, token 2 as before
    selected = torch.tensor([[False, True], [True, True], [True, True]])
    assert tokens_left_behind(DROPPED, selected) == pytest.approx(2 / 3)
    assert tokens_left_behind(torch.zeros(4, 2, dtype=torch.bool)) == 0.0


# -- entropy ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("E", [2, 8, 64])
def test_entropies_uniform_and_one_hot(E):
    assert router_entropy(torch.full((5, E), 1.0 / E)) == pytest.approx(math.log(E), rel=1e-6)
    assert router_entropy(torch.eye(E)) == pytest.approx(0.0, abs=1e-6)
    assert usage_entropy(torch.full((E,), 7)) == pytest.approx(math.log(E), rel=1e-9)
    one_hot = torch.zeros(E)
    one_hot[0] = 12
    assert usage_entropy(one_hot) == pytest.approx(0.0, abs=1e-12)


def test_entropies_hand_values():
    # token 0: H(½, ½) = ln 2; token 1: H(uniform 4) = ln 4 -> mean 1.5·ln 2
    probs = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    assert router_entropy(probs) == pytest.approx(1.5 * math.log(2), abs=1e-6)
    # u = (¼, ¼, ½): −(2·¼ ln ¼ + ½ ln ½) = ½ ln 4 + ½ ln 2 = 1.5 ln 2
    assert usage_entropy(torch.tensor([1, 1, 2])) == pytest.approx(1.5 * math.log(2))
    assert usage_entropy(torch.zeros(3)) == 0.0
    assert usage_entropy(torch.zeros(0)) == 0.0


@PROPS
@given(counts_st)
def test_usage_entropy_at_most_ln_e(counts):
    assert usage_entropy(torch.tensor(counts)) <= math.log(len(counts)) + 1e-6


# -- specialization ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("use_mask", [False, True])
def test_expert_label_counts_matches_naive_loop(use_mask):
    g = torch.Generator().manual_seed(3)
    T, K, E, L = 50, 3, 5, 4
    idx = torch.randint(0, E, (T, K), generator=g)
    labels = torch.randint(0, L, (T,), generator=g)
    mask = torch.rand(T, K, generator=g) > 0.3 if use_mask else None
    naive = [[0] * E for _ in range(L)]
    for t in range(T):
        for j in range(K):
            if mask is None or mask[t, j]:
                naive[int(labels[t])][int(idx[t, j])] += 1
    got = expert_label_counts(idx, labels, E, L, mask)
    assert got.dtype == torch.long and got.shape == (L, E)
    assert got.tolist() == naive


def test_expert_label_counts_ignores_masked_invalid_index():
    idx = torch.tensor([[0, -1], [1, 1]])
    mask = torch.tensor([[True, False], [True, True]])
    got = expert_label_counts(idx, torch.tensor([1, 0]), 2, 2, mask)
    assert got.tolist() == [[0, 2], [1, 0]]
    with pytest.raises(ValueError):
        expert_label_counts(idx, torch.tensor([1, 0]), 2, 2)


def test_mutual_information_hand_cases():
    independent = torch.outer(torch.tensor([1, 2]), torch.tensor([3, 1, 2]))  # p(l, e) = p(l) p(e)
    assert mutual_information(independent) == pytest.approx(0.0, abs=1e-12)
    assert mutual_information(5 * torch.eye(4, dtype=torch.long)) == pytest.approx(math.log(4))
    # p = [[¼, ¼], [0, ½]], p(l) = (½, ½), p(e) = (¼, ¾):
    # ¼ ln(¼/⅛) + ¼ ln(¼/⅜) + ½ ln(½/⅜) = ¼ ln 2 + ¼ ln(2/3) + ½ ln(4/3)
    expected = 0.25 * math.log(2) + 0.25 * math.log(2 / 3) + 0.5 * math.log(4 / 3)
    assert mutual_information(torch.tensor([[1, 1], [0, 2]])) == pytest.approx(expected)
    assert mutual_information(torch.zeros(3, 4)) == 0.0


@PROPS
@given(st.integers(1, 6), st.integers(1, 6), st.data())
def test_mutual_information_bounds(L, E, data):
    cells = data.draw(st.lists(st.integers(0, 20), min_size=L * E, max_size=L * E))
    mi = mutual_information(torch.tensor(cells).view(L, E))
    assert -1e-9 <= mi <= min(math.log(L), math.log(E)) + 1e-6


def test_co_activation_hand_example():
    # tokens choose {0,1}, {0,2}, {0,1}, {1,2}; expert 3 never chosen
    idx = torch.tensor([[0, 1], [0, 2], [0, 1], [1, 2]])
    # expert 0: tokens 0,1,2 -> with 1 in two of them, with 2 in one
    # expert 1: tokens 0,2,3 -> with 0 in two, with 2 in one
    # expert 2: tokens 1,3 -> with 0 in one, with 1 in one
    expected = torch.tensor(
        [
            [0, 2 / 3, 1 / 3, 0],
            [2 / 3, 0, 1 / 3, 0],
            [1 / 2, 1 / 2, 0, 0],
            [0, 0, 0, 0],
        ]
    )
    torch.testing.assert_close(co_activation(idx, 4), expected)


def test_co_activation_with_mask():
    idx = torch.tensor([[0, 1], [0, 2], [0, 1], [1, 2]])
    mask = torch.tensor([[True, True], [True, True], [True, True], [True, False]])
    # token 3 now chose only expert 1; expert 1: tokens 0,2,3 -> with 0 in two, with 2 in none
    # expert 2: token 1 only -> with 0 always
    expected = torch.tensor(
        [
            [0, 2 / 3, 1 / 3],
            [2 / 3, 0, 0],
            [1, 0, 0],
        ]
    )
    torch.testing.assert_close(co_activation(idx, 3, mask), expected)


# -- parameters and FLOPs ------------------------------------------------------------------------------------
def test_parameter_counts_softmax_topk_with_shared():
    cfg = MoEConfig(d_model=4, n_experts=8, top_k=2, expert_hidden=16, router="softmax_topk",
                    n_shared_experts=1)
    # one expert: 3·4·16 = 192; experts 8·192 = 1536; shared 192; router 4·8 = 32; total 1760
    # active 32 + 192 + 2·192 = 608; dense equivalent 3·4·(2·16) = 384
    assert parameter_counts(cfg) == {
        "experts": 1536, "shared": 192, "router": 32, "total": 1760, "active": 608, "dense_equivalent": 384,
    }


def test_parameter_counts_noisy_hash_soft():
    # noisy_topk d=10 E=4 k=1 h=5: expert 150; experts 600; router 2·10·4 = 80; total 680; active 80 + 150
    p = parameter_counts(MoEConfig(d_model=10, n_experts=4, top_k=1, expert_hidden=5, router="noisy_topk"))
    assert (p["experts"], p["router"], p["total"], p["active"], p["dense_equivalent"]) == (
        600, 80, 680, 230, 150)
    # hash, same sizes: no router parameters; active 150
    p = parameter_counts(MoEConfig(d_model=10, n_experts=4, top_k=1, expert_hidden=5, router="hash"))
    assert (p["router"], p["total"], p["active"]) == (0, 600, 150)
    # soft d=8 E=4 h=2 slots=3: expert 48; experts 192; router 8·4·3 + 1 = 97; total 289;
    # active = all experts + router = 289; dense equivalent 3·8·(4·2) = 192
    p = parameter_counts(MoEConfig(d_model=8, n_experts=4, top_k=1, expert_hidden=2, router="soft",
                                   slots_per_expert=3))
    assert (p["experts"], p["router"], p["total"], p["active"], p["dense_equivalent"]) == (
        192, 97, 289, 289, 192)


@pytest.mark.parametrize("cf, n_active", [(None, 2), (1.5, 3), (4.0, 4)])
def test_parameter_counts_expert_choice(cf, n_active):
    # d=2 E=4 k=2 h=3: expert 18; router 8; active = 8 + min(4, cf·k)·18 with cf = 1 when None
    cfg = MoEConfig(d_model=2, n_experts=4, top_k=2, expert_hidden=3, router="expert_choice",
                    capacity_factor=cf)
    assert parameter_counts(cfg)["active"] == 8 + n_active * 18


@pytest.mark.parametrize("router", ["softmax_topk", "noisy_topk", "sigmoid_bias", "hash"])
def test_flops_ratio_token_choice(router):
    d, E, k, h, n_shared = 4, 8, 2, 16, 1
    cfg = MoEConfig(d_model=d, n_experts=E, top_k=k, expert_hidden=h, router=router,
                    n_shared_experts=n_shared)
    f = flops_per_token(cfg)
    one_expert = 2 * 3 * d * h  # 384
    router_flops = {"noisy_topk": 2 * 2 * d * E, "hash": 0}.get(router, 2 * d * E)
    assert f["router"] == router_flops
    assert f["experts"] == k * one_expert
    assert f["shared"] == n_shared * one_expert
    assert f["dense_equivalent"] == 2 * 3 * d * k * h
    assert f["ratio_to_dense"] == pytest.approx((router_flops + k * one_expert + n_shared * one_expert)
                                                / (2 * 3 * d * k * h))


def test_flops_soft():
    # d=8 E=4 h=2 slots=3: 12 slots, one expert 2·3·8·2 = 96 FLOPs; dispatch + combine 2·2·8·12 = 384
    cfg = MoEConfig(d_model=8, n_experts=4, top_k=1, expert_hidden=2, router="soft", slots_per_expert=3)
    f = flops_per_token(cfg)  # n_tokens = 12: 12·96/12 + 384 = 480
    assert f["experts"] == pytest.approx(480)
    assert f["router"] == pytest.approx(2 * 8 * 12)
    assert flops_per_token(cfg, n_tokens=24)["experts"] == pytest.approx(12 * 96 / 24 + 384)
    with pytest.raises(ValueError):
        flops_per_token(cfg, n_tokens=0)
