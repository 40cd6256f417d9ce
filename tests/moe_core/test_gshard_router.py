"""GShard's top-2 gating with random routing (Lepikhin et al. 2020, §2.2, Algorithm 1), router 'gshard_top2'.

Against the per-token reference (values, losses, gradients and decisions, with the same uniform draws handed to
both), the keep rate of the 2nd expert against its probability 2*g2, determinism by seed, capacity, eval, and
the config and settings rules (top_k is always 2).
"""

from __future__ import annotations

import pytest
import torch

from moe_core import MoEConfig, MoELayer
from moe_core.accelerator import kernels as native
from moe_core.layer.reference import naive_moe
from moe_core.training.settings import PlaygroundSettings
from moe_core.training.trainer import Trainer

TOL = 1e-5


@pytest.fixture(autouse=True, params=["C kernels", "torch ops"])
def kernel_path(request, monkeypatch):
    """The experts run in C where the kernels build, or as torch ops only (MOE_PLAYGROUND_NATIVE=0)."""
    if request.param == "torch ops":
        monkeypatch.setenv("MOE_PLAYGROUND_NATIVE", "0")
    else:
        monkeypatch.setattr(native, "_gemm_vectorized", lambda lib: True)
    return request.param


def _layer(cfg: MoEConfig, dtype: torch.dtype = torch.float64, router_std: float = 1.0) -> MoELayer:
    torch.manual_seed(0)
    layer = MoELayer(cfg).to(dtype)
    with torch.no_grad():  # a confident router: many 2nd gates well below 1/2, so that draws reject some
        layer.router.weight.normal_(0, router_std)
    return layer


def _draws(T: int, dtype: torch.dtype, seed: int = 123) -> torch.Tensor:
    return torch.rand(T, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _compare(cfg: MoEConfig, dtype: torch.dtype, train: bool = True, T: int = 48) -> MoELayer:
    layer = _layer(cfg, dtype)
    layer.train(train)
    x = torch.randn(T, cfg.d_model, dtype=dtype, requires_grad=True)
    u = _draws(T, dtype) if train else None
    probe = torch.randn(T, cfg.d_model, dtype=dtype)
    params = dict(layer.named_parameters())

    y, info = layer(x, noise=u)
    grads = torch.autograd.grad((y * probe).sum() + info.aux_loss, [x, *params.values()], allow_unused=True)
    y_ref, aux_ref, decisions = naive_moe(layer, x, noise=u)
    grads_ref = torch.autograd.grad((y_ref * probe).sum() + aux_ref, [x, *params.values()], allow_unused=True)

    torch.testing.assert_close(y, y_ref, atol=TOL, rtol=TOL)
    torch.testing.assert_close(info.aux_loss.to(dtype), aux_ref.to(dtype), atol=TOL, rtol=TOL)
    for name, g, g_ref in zip(["x", *params], grads, grads_ref, strict=True):
        g = torch.zeros_like(g_ref) if g is None else g
        g_ref = torch.zeros_like(g) if g_ref is None else g_ref
        torch.testing.assert_close(g, g_ref, atol=TOL, rtol=TOL, msg=lambda m, n=name: f"grad of {n}: {m}")
    for t, slots in enumerate(decisions):  # the reference lists the 2nd expert only when its draw kept it
        assert [int(info.expert_index[t, j]) for j in range(len(slots))] == [e for e, _, _ in slots]
        assert info.selected[t].tolist() == [True, len(slots) == 2], f"token {t}: 2nd-expert draw differs"
        for j, (_, w, kept) in enumerate(slots):
            assert bool(info.dropped[t, j]) == (not kept), f"token {t} slot {j}: drop decision differs"
            assert abs(float(info.combine_weights[t, j]) - (w if kept else 0.0)) < 1e-5
    return layer


@pytest.mark.parametrize("capacity_factor", [None, 1.0, 0.5], ids=lambda c: f"cf{c}")
@pytest.mark.parametrize("policy", ["position", "probability"])
def test_matches_reference_float64(capacity_factor, policy):
    cfg = MoEConfig(d_model=12, n_experts=4, top_k=2, expert_hidden=8, router="gshard_top2",
                    capacity_factor=capacity_factor, overflow_policy=policy, aux_loss_coef=0.1, z_loss_coef=0.01)
    _compare(cfg, torch.float64)


def test_matches_reference_float32_with_shared_experts():
    cfg = MoEConfig(d_model=16, n_experts=6, top_k=2, expert_hidden=8, router="gshard_top2", capacity_factor=1.0,
                    n_shared_experts=1, aux_loss_coef=0.1, z_loss_coef=0.01)
    _compare(cfg, torch.float32, T=64)


def test_the_draws_of_the_comparison_reject_some_second_experts_and_keep_others():
    """Guards the reference test against passing vacuously (every 2nd kept, or none)."""
    cfg = MoEConfig(d_model=12, n_experts=4, top_k=2, expert_hidden=8, router="gshard_top2")
    layer = _layer(cfg)
    _, info = layer(torch.randn(48, 12, dtype=torch.float64), noise=_draws(48, torch.float64))
    kept_second = info.selected[:, 1]
    assert 0 < int(kept_second.sum()) < 48
    assert bool(info.selected[:, 0].all()), "the 1st expert is always dispatched"


def test_eval_keeps_both_experts_draws_nothing_and_matches_reference():
    cfg = MoEConfig(d_model=12, n_experts=5, top_k=2, expert_hidden=8, router="gshard_top2", capacity_factor=1.25,
                    aux_loss_coef=0.05)
    layer = _compare(cfg, torch.float64, train=False)
    gen = torch.Generator().manual_seed(7)
    layer.router.generator = gen
    state = gen.get_state()
    _, info = layer(torch.randn(32, 12, dtype=torch.float64))
    assert bool(info.selected.all())
    assert torch.equal(gen.get_state(), state), "evaluation must not consume the training random stream"


def test_the_draw_is_the_rule_2_g2_greater_than_u():
    """u = 0 keeps every 2nd expert (softmax top-2, renormalized); u = 1 keeps none (top-1 with weight g1)."""
    cfg = MoEConfig(d_model=12, n_experts=4, top_k=2, expert_hidden=8, router="gshard_top2")
    layer = _layer(cfg)
    top2 = MoELayer(cfg.replace(router="softmax_topk", normalize_topk=True)).to(torch.float64)
    top2.load_state_dict(layer.state_dict())
    x = torch.randn(40, 12, dtype=torch.float64)
    y_all, info_all = layer(x, noise=torch.zeros(40, dtype=torch.float64))
    torch.testing.assert_close(y_all, top2(x)[0])
    y_none, info_none = layer(x, noise=torch.ones(40, dtype=torch.float64))
    assert not bool(info_none.selected[:, 1].any())
    g1 = info_all.combine_weights[:, :1]
    first_only = torch.stack([layer.experts.expert(int(e), x[t : t + 1])[0]
                              for t, e in enumerate(info_all.expert_index[:, 0])])
    torch.testing.assert_close(y_none, g1 * first_only)


def test_gates_are_normalized_before_the_draw_and_gradients_reach_the_router():
    cfg = MoEConfig(d_model=12, n_experts=4, top_k=2, expert_hidden=8, router="gshard_top2", aux_loss_coef=0.0)
    layer = _layer(cfg)
    x = torch.randn(30, 12, dtype=torch.float64)
    y, info = layer(x, noise=_draws(30, torch.float64))
    p = info.router_probs.gather(1, info.expert_index)
    kept = info.selected & ~info.dropped
    torch.testing.assert_close(info.combine_weights, (p / p.sum(1, keepdim=True)) * kept)
    y.square().sum().backward()
    assert layer.router.weight.grad is not None and layer.router.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_keep_rate_of_the_second_expert_is_the_mean_of_2_g2(seed):
    """Over 20,000 tokens the kept share of 2nd experts is mean(min(1, 2*g2)) within 0.02 (the standard error
    is at most 0.5 / sqrt(20000) = 0.0035, so 0.02 is over 5 of them); the draws come from the router's seeded
    generator, as in training."""
    T = 20_000
    cfg = MoEConfig(d_model=8, n_experts=8, top_k=2, expert_hidden=4, router="gshard_top2")
    layer = _layer(cfg, torch.float32, router_std=0.6)
    layer.router.generator = torch.Generator().manual_seed(seed)
    x = torch.randn(T, 8, generator=torch.Generator().manual_seed(100 + seed))
    with torch.no_grad():
        _, info = layer(x)
    top = info.router_probs.gather(1, info.expert_index)
    g2 = top[:, 1] / top.sum(1)
    expected = float((2 * g2).clamp(max=1).mean())
    observed = float(info.selected[:, 1].float().mean())
    assert 0.3 < expected < 0.9, "the router must be confident enough for the test to mean something"
    assert abs(observed - expected) < 0.02, (observed, expected)
    small = g2 < 0.15  # and per token: a 2nd gate under 0.15 is kept less than 30 % of the time
    assert int(small.sum()) > 500
    assert float(info.selected[small, 1].float().mean()) < float((2 * g2[small]).mean()) + 0.03 < 0.33


def test_same_seed_same_draws_other_seed_other_draws():
    settings = PlaygroundSettings(router="gshard_top2", top_k=2, steps_per_tick=1)

    def run(seed: int) -> tuple[list[float], torch.Tensor]:
        model, data, train = PlaygroundSettings(**{**vars(settings), "seed": seed}).to_configs()
        trainer = Trainer(model, data, train)
        trainer.step(15)
        _, infos = trainer.model(trainer.tensors.x_train[:256])  # one more training forward: its draw
        return trainer.history["task_loss"].tolist(), infos[0].selected[:, 1].clone()

    loss_a, sel_a = run(3)
    loss_b, sel_b = run(3)
    loss_c, sel_c = run(4)
    assert loss_a == loss_b and torch.equal(sel_a, sel_b)
    assert not torch.equal(sel_a, sel_c)
    assert 0 < int(sel_a.sum()) < 256, "training draws keep some 2nd experts and not others"


def test_capacity_first_choices_first_and_a_rejected_second_takes_no_slot():
    T, E = 64, 4
    cfg = MoEConfig(d_model=12, n_experts=E, top_k=2, expert_hidden=8, router="gshard_top2", capacity_factor=0.5)
    layer = _layer(cfg)
    x = torch.randn(T, 12, dtype=torch.float64)
    u = _draws(T, torch.float64)
    _, info = layer(x, noise=u)
    C = info.capacity
    assert C == 16  # ceil(0.5 * 2 * 64 / 4): capacity counts k = 2 slots per token
    first, second = info.expert_index[:, 0], info.expert_index[:, 1]
    sel2 = info.selected[:, 1]
    for e in range(E):
        n_first = int((first == e).sum())
        n_second = int(((second == e) & sel2).sum())
        assert int(info.tokens_per_expert[e]) == n_first + n_second, "only drawn 2nd experts are counted"
        assert int(info.kept_per_expert[e]) == min(C, n_first + n_second)
        kept_first = int(((first == e) & ~info.dropped[:, 0]).sum())
        assert kept_first == min(C, n_first), "every 1st choice is placed before any 2nd choice"
    # with every 2nd kept (u = 0) the same experts fill up more: drops can only grow
    _, info_all = layer(x, noise=torch.zeros(T, dtype=torch.float64))
    assert int(info_all.dropped.sum()) > int(info.dropped.sum())


def test_the_fused_c_layer_is_not_taken(monkeypatch):
    from moe_core import accelerator
    from moe_core.accelerator import fused_layer

    def refuse(*args, **kwargs):
        raise AssertionError("the fused softmax top-k layer ran for gshard_top2")

    monkeypatch.setattr(fused_layer.FusedMoE, "apply", refuse)
    cfg = MoEConfig(d_model=16, n_experts=4, top_k=2, expert_hidden=8, router="gshard_top2")
    layer = MoELayer(cfg)
    assert accelerator.softmax_topk_form(layer) is None
    layer(torch.randn(32, 16))


def test_bad_draw_shape_gets_a_specific_message():
    cfg = MoEConfig(d_model=12, n_experts=4, top_k=2, expert_hidden=8, router="gshard_top2")
    with pytest.raises(ValueError, match=r"noise must be the \(T,\) = \(10,\) uniform draw"):
        MoELayer(cfg)(torch.randn(10, 12), noise=torch.rand(10, 12))
    with pytest.raises(ValueError, match="needs noise"):
        naive_moe(MoELayer(cfg), torch.randn(10, 12))


def test_config_fixes_k_at_2_and_needs_two_experts():
    with pytest.raises(ValueError, match="GShard's gating is top-2"):
        MoEConfig(router="gshard_top2", top_k=1)
    with pytest.raises(ValueError, match="n_experts must be at least 2"):
        MoEConfig(router="gshard_top2", n_experts=1, top_k=1)
    assert MoEConfig(router="gshard_top2", top_k=2).slots_per_token == 2


def test_settings_coerce_and_url_round_trip():
    s, notes = PlaygroundSettings.from_query_params({"router": "gshard_top2", "top_k": "4"})
    assert s.router == "gshard_top2" and s.top_k == 2
    assert any("top-k set to 2" in n for n in notes), notes
    s, notes = PlaygroundSettings.from_query_params({"router": "gshard_top2", "experts": "1"})
    assert (s.n_experts, s.top_k) == (2, 2) and any("experts set to 2" in n for n in notes), notes
    s = PlaygroundSettings(router="gshard_top2", n_experts=16, capacity_factor=1.0)
    back, notes = PlaygroundSettings.from_query_params(s.to_query_params())
    assert back == s and notes == []
    s, notes = PlaygroundSettings.from_query_params({"router": "gshard_top2", "dataset": "tokens"})
    assert s.router == "gshard_top2" and notes == [], "GShard's router decides token by token: causal"
