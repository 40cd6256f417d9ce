"""The vectorized MoELayer against the slow per-token reference: outputs, losses and gradients.

Every router, with and without capacity limits, both overflow policies, with shared experts, in float64
(exact comparisons) and float32, with the training noise drawn once and handed
to both implementations; each case on both paths of the kernel_path fixture (accelerated, readable).
"""

from __future__ import annotations

import pytest
import torch

from moe_core import MoEConfig, MoELayer
from moe_core.accelerator import kernels as native
from moe_core.layer.reference import naive_moe

TOL = 1e-5


@pytest.fixture(autouse=True, params=["accelerated", "readable"])
def kernel_path(request, monkeypatch):
    """Run every comparison on both paths: the accelerator where it applies (softmax_topk and switch: the whole
    layer in one C call, with its C matmul whatever compiler built it), and the readable layer alone
    (MOE_PLAYGROUND_NATIVE=0)."""
    if request.param == "readable":
        monkeypatch.setenv("MOE_PLAYGROUND_NATIVE", "0")
    else:
        monkeypatch.setattr(native, "_gemm_vectorized", lambda lib: True)
    return request.param


def _noise(layer: MoELayer, x: torch.Tensor) -> torch.Tensor | None:
    cfg = layer.config
    g = torch.Generator().manual_seed(123)
    T = x.shape[0]
    if cfg.router == "noisy_topk":
        return torch.randn(T, cfg.n_experts, generator=g, dtype=x.dtype)
    if cfg.router == "soft":
        return torch.randn(T, cfg.n_experts * cfg.slots_per_expert, generator=g, dtype=x.dtype)
    eps = cfg.router_noise
    return (1 - eps + 2 * eps * torch.rand(T, cfg.d_model, generator=g, dtype=x.dtype)) if eps else None


def _params(layer: MoELayer) -> dict[str, torch.nn.Parameter]:
    return dict(layer.named_parameters())


def _compare(cfg: MoEConfig, dtype: torch.dtype, T: int = 24, train: bool = True, token_ids=None) -> None:
    torch.manual_seed(0)
    layer = MoELayer(cfg).to(dtype)
    layer.train(train)
    if cfg.router == "noisy_topk":  # tensor2tensor starts from zeros; random weights avoid exact ties
        with torch.no_grad():
            layer.router.weight.normal_(0, 0.5)
            layer.router.noise_weight.normal_(0, 0.5)
    if cfg.router == "sigmoid_bias":  # a non-zero bias, so that selection differs from plain top-k
        layer.router.bias.copy_(torch.linspace(-0.3, 0.3, cfg.n_experts))
    x = torch.randn(T, cfg.d_model, dtype=dtype, requires_grad=True)
    noise = _noise(layer, x) if train else None
    probe = torch.randn(T, cfg.d_model, dtype=dtype)  # a random direction for the backward pass

    y_fast, info = layer(x, token_ids=token_ids, noise=noise)
    loss_fast = (y_fast * probe).sum() + info.aux_loss
    grads_fast = torch.autograd.grad(loss_fast, [x, *_params(layer).values()], allow_unused=True)

    y_ref, aux_ref, decisions = naive_moe(layer, x, token_ids=token_ids, noise=noise)
    loss_ref = (y_ref * probe).sum() + aux_ref
    grads_ref = torch.autograd.grad(loss_ref, [x, *_params(layer).values()], allow_unused=True)

    torch.testing.assert_close(y_fast, y_ref, atol=TOL, rtol=TOL)
    torch.testing.assert_close(info.aux_loss.to(dtype), aux_ref.to(dtype), atol=TOL, rtol=TOL)
    names = ["x", *_params(layer)]
    for name, gf, gr in zip(names, grads_fast, grads_ref, strict=True):
        if gf is None and gr is None:
            continue
        gf = torch.zeros_like(gr) if gf is None else gf
        gr = torch.zeros_like(gf) if gr is None else gr
        torch.testing.assert_close(gf, gr, atol=TOL, rtol=TOL, msg=lambda m, n=name: f"grad of {n}: {m}")
    if cfg.router != "soft":  # the routing decisions themselves agree slot by slot
        for t, slots in enumerate(decisions):
            for e, w, kept in slots:
                cols = (info.expert_index[t] == e).nonzero()
                assert len(cols) == 1, f"token {t}: expert {e} chosen by the reference, not by the layer"
                j = int(cols[0])
                assert bool(info.dropped[t, j]) == (not kept), f"token {t} expert {e}: drop decision differs"
                assert abs(float(info.combine_weights[t, j]) - (w if kept else 0.0)) < 1e-5


ROUTER_CASES = [
    dict(router="softmax_topk", top_k=2),
    dict(router="softmax_topk", top_k=3, normalize_topk=False),
    dict(router="noisy_topk", top_k=2),
    dict(router="switch", top_k=1, router_noise=0.01),
    dict(router="expert_choice", top_k=2),
    dict(router="hash", top_k=2),
    dict(router="soft", top_k=1, slots_per_expert=2),
    dict(router="sigmoid_bias", top_k=2),
    dict(router="sigmoid_bias", top_k=1),
    dict(router="sigmoid_bias", top_k=2, normalize_topk=False),
    dict(router="dense", top_k=1),
]
CAPACITY_CASES = [None, 1.0, 0.5]


@pytest.mark.parametrize("case", ROUTER_CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
@pytest.mark.parametrize("capacity_factor", CAPACITY_CASES, ids=lambda c: f"cf{c}")
@pytest.mark.parametrize("policy", ["position", "probability"])
def test_every_router_matches_reference_float64(case, capacity_factor, policy):
    cfg = MoEConfig(
        d_model=12, n_experts=4, expert_hidden=8, capacity_factor=capacity_factor, overflow_policy=policy,
        aux_loss_coef=0.1, z_loss_coef=0.01, **case,
    )
    _compare(cfg, torch.float64)


@pytest.mark.parametrize("case", ROUTER_CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_every_router_matches_reference_float32(case):
    cfg = MoEConfig(d_model=16, n_experts=4, expert_hidden=8, capacity_factor=1.0, aux_loss_coef=0.1,
                    z_loss_coef=0.01, **case)
    _compare(cfg, torch.float32)


@pytest.mark.parametrize("router", ["softmax_topk", "noisy_topk", "sigmoid_bias", "expert_choice", "dense"])
def test_eval_mode_and_shared_experts_match_reference(router):
    cfg = MoEConfig(d_model=12, n_experts=6, top_k=2, expert_hidden=8, capacity_factor=1.25, router=router,
                    n_shared_experts=2, aux_loss_coef=0.05, z_loss_coef=0.01)
    _compare(cfg, torch.float64, train=False)


def test_hash_with_token_ids_matches_reference():
    cfg = MoEConfig(d_model=12, n_experts=5, top_k=2, expert_hidden=8, router="hash")
    ids = torch.randint(0, 100, (24,), generator=torch.Generator().manual_seed(1))
    _compare(cfg, torch.float64, token_ids=ids)


def test_many_experts_and_tokens_float32():
    cfg = MoEConfig(d_model=16, n_experts=16, top_k=2, expert_hidden=8, capacity_factor=0.75,
                    overflow_policy="probability", aux_loss_coef=0.1, z_loss_coef=0.01)
    _compare(cfg, torch.float32, T=96)
