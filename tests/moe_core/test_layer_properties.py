"""Properties over random valid configs and shapes, the §16 test vectors, and the layer's contracts."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moe_core import ROUTERS, MoEConfig, MoELayer
from moe_core.layer.config import FORCED_TOP_K
from moe_core.layer.routers.base import softmax_topk


@st.composite
def layer_cases(draw):
    router = draw(st.sampled_from(ROUTERS))
    E = draw(st.integers(2 if router == "gshard_top2" else 1, 12))
    k = FORCED_TOP_K.get(router) or draw(st.integers(1, E))
    cfg = MoEConfig(
        d_model=draw(st.sampled_from([4, 6, 8])),
        n_experts=E,
        top_k=k,
        expert_hidden=draw(st.sampled_from([2, 4])),
        capacity_factor=draw(st.one_of(st.none(), st.floats(0.1, 3.0))),
        router=router,
        normalize_topk=draw(st.booleans()),
        overflow_policy=draw(st.sampled_from(["position", "probability"])),
        router_noise=draw(st.sampled_from([0.0, 0.05])),
        n_shared_experts=draw(st.integers(0, 1)),
        slots_per_expert=draw(st.integers(1, 3)),
    )
    shape = draw(st.sampled_from([(1,), (7,), (2, 5), (3, 1)]))
    return cfg, shape, draw(st.booleans()), draw(st.integers(0, 2**16))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer_cases())
def test_routing_invariants(case):
    cfg, shape, train, seed = case
    torch.manual_seed(seed)
    layer = MoELayer(cfg).train(train)
    x = torch.randn(*shape, cfg.d_model)
    y, info = layer(x)
    T, K = math.prod(shape), cfg.slots_per_token
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert info.expert_index.shape == (T, K) and info.combine_weights.shape == (T, K)
    w = info.combine_weights
    assert torch.isfinite(w).all() and (w >= 0).all()
    sums = w.sum(dim=1)
    assert (sums <= 1 + 1e-5).all(), "a token's kept weights never add up to more than 1"
    renormalized = cfg.normalize_topk or cfg.router in ("noisy_topk", "dense", "soft", "hash", "gshard_top2")
    sums_to_one = renormalized and cfg.router not in ("switch", "expert_choice") and not info.dropped.any()
    sums_to_one &= not (cfg.router == "gshard_top2" and train)  # a 2nd expert that lost its draw leaves g1 < 1
    if sums_to_one and not (cfg.router == "sigmoid_bias" and cfg.top_k == 1):
        torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0)
    if info.capacity is not None:
        assert (info.kept_per_expert <= info.capacity).all()
    assert (info.kept_per_expert <= info.tokens_per_expert).all()
    assert int(info.dropped.sum()) == int((info.tokens_per_expert - info.kept_per_expert).sum())
    assert torch.isfinite(info.aux_loss)
    torch.testing.assert_close(info.router_probs.sum(1), torch.ones(T), atol=1e-5, rtol=0)


def test_topk_equivalence_vector():
    # §16: z = (2, 1, 0, -1), k = 2: softmax over {2, 1} = (0.731059, 0.268941)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    r = softmax_topk(logits, 2, normalize=True, z_coef=0.0)
    weights, index = r.gates, r.index
    assert index.tolist() == [[0, 1]]
    torch.testing.assert_close(weights, torch.tensor([[0.731059, 0.268941]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(weights, logits[:, :2].softmax(-1))


def test_loss_free_bias_update_vector():
    # §16: counts (30, 10, 20, 20), u = 1e-3 -> bias (-0.001, +0.001, 0, 0); sign(0) = 0 keeps a bias
    layer = MoELayer(MoEConfig(d_model=4, n_experts=4, top_k=1, router="sigmoid_bias", bias_update_rate=1e-3))
    layer.router.pending_counts.copy_(torch.tensor([30.0, 10.0, 20.0, 20.0]))
    layer.update_router_bias()
    torch.testing.assert_close(layer.router.bias, torch.tensor([-0.001, 0.001, 0.0, 0.0]))
    assert layer.router.pending_counts.sum() == 0, "counts restart after each optimizer step"


def test_sigmoid_bias_counts_accumulate_only_in_training_with_grad():
    layer = MoELayer(MoEConfig(d_model=4, n_experts=4, top_k=2, router="sigmoid_bias"))
    x = torch.randn(10, 4)
    layer(x)
    layer(x)
    assert layer.router.pending_counts.sum() == 2 * 10 * 2
    with torch.no_grad():
        layer(x)
    layer.eval()
    layer(x)
    assert layer.router.pending_counts.sum() == 40


def test_sigmoid_bias_gets_no_gradient_and_stays_out_of_the_weights():
    torch.manual_seed(0)
    cfg = MoEConfig(d_model=8, n_experts=6, top_k=2, router="sigmoid_bias", aux_loss_coef=0.1)
    layer = MoELayer(cfg)
    assert "router.bias" not in dict(layer.named_parameters())
    assert not layer.router.bias.requires_grad
    x = torch.randn(32, 8)
    layer.router.bias.copy_(torch.tensor([5.0, 5.0, 0, 0, 0, 0]))  # forces experts 0 and 1
    y, info = layer(x)
    (y.square().mean() + info.aux_loss).backward()
    assert layer.router.bias.grad is None
    assert set(info.expert_index.unique().tolist()) == {0, 1}
    scores = torch.sigmoid(x @ layer.router.weight.detach().t())  # unbiased
    chosen = scores[:, :2]
    expected = chosen / chosen.sum(1, keepdim=True)
    order = info.expert_index  # (T, 2) in some order of {0, 1}
    torch.testing.assert_close(info.combine_weights, expected.gather(1, order))


def test_topk_equals_all_experts_equals_dense_mixture():
    torch.manual_seed(0)
    topk = MoELayer(MoEConfig(d_model=8, n_experts=5, top_k=5, expert_hidden=4, router="softmax_topk"))
    dense = MoELayer(MoEConfig(d_model=8, n_experts=5, top_k=1, expert_hidden=4, router="dense"))
    dense.load_state_dict(topk.state_dict())
    x = torch.randn(20, 8)
    torch.testing.assert_close(topk(x)[0], dense(x)[0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("router", ["softmax_topk", "switch", "soft", "hash"])
def test_batched_input_equals_flattened_input(router):
    torch.manual_seed(0)
    cfg = MoEConfig(d_model=8, n_experts=4, top_k=1, expert_hidden=4, router=router)
    layer = MoELayer(cfg).eval()
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(layer(x)[0], layer(x.reshape(15, 8))[0].reshape(3, 5, 8))


def test_router_noise_only_in_training_and_only_for_the_router():
    torch.manual_seed(0)
    cfg = MoEConfig(d_model=8, n_experts=4, top_k=1, router="switch", router_noise=0.5)
    layer = MoELayer(cfg)
    x = torch.randn(50, 8)
    layer.eval()
    a, _ = layer(x)
    b, _ = layer(x)
    assert torch.equal(a, b), "no noise at evaluation"
    layer.train()
    _, i1 = layer(x)
    _, i2 = layer(x)
    assert not torch.equal(i1.router_logits, i2.router_logits), "jitter changes the router's view in training"


def test_same_seed_same_layer_same_output():
    cfg = MoEConfig(router="noisy_topk", capacity_factor=1.0)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        layer = MoELayer(cfg)
        outs.append(layer(torch.randn(64, 64))[0])
    assert torch.equal(outs[0], outs[1])


def test_live_hyperparameters_change_without_rebuild_and_shape_fields_are_refused():
    torch.manual_seed(0)
    layer = MoELayer(MoEConfig(d_model=8, n_experts=4, top_k=2, expert_hidden=4))
    x = torch.randn(40, 8)
    _, before = layer(x)
    assert before.capacity is None
    layer.set_hyperparameters(capacity_factor=0.5, aux_loss_coef=0.0)
    _, after = layer(x)
    assert after.capacity == 10 and float(after.aux_loss.detach()) == 0.0
    with pytest.raises(ValueError, match="n_experts"):
        layer.set_hyperparameters(n_experts=8)
    with pytest.raises(ValueError, match="capacity_factor"):
        layer.set_hyperparameters(capacity_factor=-1)
    assert layer.config.capacity_factor == 0.5, "a refused change leaves the config as it was"


def test_losses_that_apply_per_router():
    torch.manual_seed(0)
    x = torch.randn(16, 8)
    expected = {
        "softmax_topk": {"load_balance", "z"},
        "switch": {"load_balance", "z"},
        "sigmoid_bias": {"load_balance", "z"},
        "noisy_topk": {"importance", "load", "z"},
        "expert_choice": {"z"},
        "dense": {"z"},
        "hash": set(),
        "soft": set(),
    }
    for router, keys in expected.items():
        cfg = MoEConfig(d_model=8, n_experts=4, top_k=1, router=router, z_loss_coef=0.01)
        _, info = MoELayer(cfg)(x)
        assert set(info.losses) == keys, router
        for v in info.losses.values():
            assert v.requires_grad
        assert not info.router_probs.requires_grad and not info.combine_weights.requires_grad
        if "z" in keys:  # with a zero coefficient the z-loss is still reported, outside the graph
            _, info = MoELayer(cfg.replace(z_loss_coef=0.0))(x)
            assert not info.losses["z"].requires_grad and float(info.losses["z"]) > 0


def test_experts_accept_an_expanded_gradient():
    # grouped_mm's CPU backward rejects stride-0 gradients; .sum().backward() sends exactly that
    from moe_core.layer.experts import SwiGLUExperts

    experts = SwiGLUExperts(4, 16, 8)
    x = torch.randn(10, 16, requires_grad=True)
    experts(x, torch.tensor([3, 0, 4, 3])).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("shape", [(7, 10), (3, 5, 8)])
def test_swiglu_activation_gradients(shape):
    from moe_core.layer.experts import swiglu

    h = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(swiglu, (h,))
    gate, up = h.chunk(2, dim=-1)
    torch.testing.assert_close(swiglu(h), torch.nn.functional.silu(gate) * up)
