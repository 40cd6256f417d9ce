"""Edge cases on which the accelerated and readable layers must agree, with each other and with the per-token
reference (issue #15): tied router scores, an empty batch, an input whose dtype is not the layer's, and the router's
gradient at renormalized top-1. Each test runs on both paths."""

from __future__ import annotations

import math

import pytest
import torch

from moe_core import MoEConfig, MoELayer
from moe_core.accelerator import kernels as native
from moe_core.layer.config import ROUTERS
from moe_core.layer.reference import naive_moe

PATHS = ["accelerated", "readable"]
TOL = 1e-7  # float64; a tie broken the other way moves outputs by ~0.1


def _use_path(monkeypatch, path: str) -> None:
    """The accelerator where it applies (softmax_topk and switch: the whole layer in one C call), with its C matmul
    whatever compiler built it (native._gemm_vectorized); or the readable layer alone (MOE_PLAYGROUND_NATIVE=0)."""
    if path == "readable":
        monkeypatch.setenv("MOE_PLAYGROUND_NATIVE", "0")
    else:
        monkeypatch.setattr(native, "_gemm_vectorized", lambda lib: True)


@pytest.fixture(params=PATHS)
def kernel_path(request, monkeypatch):
    _use_path(monkeypatch, request.param)
    return request.param


# every router that chooses k of several by score: experts per token, or tokens per expert (expert_choice)
TOP_K_ROUTERS = [
    dict(router="softmax_topk", top_k=3),
    dict(router="softmax_topk", top_k=2),
    dict(router="softmax_topk", top_k=3, normalize_topk=False),
    dict(router="switch", top_k=1),
    dict(router="noisy_topk", top_k=3),
    dict(router="sigmoid_bias", top_k=3),
    dict(router="sigmoid_bias", top_k=1),
    dict(router="expert_choice", top_k=3),
]


@pytest.mark.parametrize("case", TOP_K_ROUTERS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
@pytest.mark.parametrize("policy", ["position", "probability"])
def test_ties_go_to_the_lower_expert_on_every_path(kernel_path, case, policy):
    """All-zero tokens tie every expert; repeated tokens tie each other (expert_choice picks tokens). With tight
    capacity the choice among ties decides which real tokens keep their slots, so it must be the reference's:
    the lower expert (token) index first, as a stable sort gives."""
    cfg = MoEConfig(d_model=8, n_experts=16, expert_hidden=8, capacity_factor=0.25, overflow_policy=policy,
                    aux_loss_coef=0.1, z_loss_coef=0.01, **case)
    torch.manual_seed(0)
    layer = MoELayer(cfg).double().eval()  # eval: no router noise, so the tied scores stay tied
    if cfg.router == "noisy_topk":  # its weights start at zero: make the real tokens' logits differ
        with torch.no_grad():
            layer.router.weight.normal_(0, 0.5)
    x = torch.randn(24, 8, dtype=torch.float64)
    x[:8] = 0.0  # every expert tied
    x[8:14] = x[14]  # seven equal tokens
    x.requires_grad_()

    y, info = layer(x)
    y_ref, aux_ref, decisions = naive_moe(layer, x)
    torch.testing.assert_close(y, y_ref, atol=TOL, rtol=TOL)
    torch.testing.assert_close(info.aux_loss, aux_ref, atol=TOL, rtol=TOL)
    for t, slots in enumerate(decisions):
        chosen = {int(e): (float(w), not bool(d)) for e, w, d, s in zip(
            info.expert_index[t], info.combine_weights[t], info.dropped[t], info.selected[t], strict=True) if s}
        expected = {e: (w if kept else 0.0, kept) for e, w, kept in slots}
        assert chosen.keys() == expected.keys(), f"token {t}: experts {sorted(chosen)}, reference {sorted(expected)}"
        for e, (w, kept) in expected.items():
            assert chosen[e][1] == kept, f"token {t} expert {e}: drop decision differs from the reference"
            assert abs(chosen[e][0] - w) < TOL, f"token {t} expert {e}: weight differs from the reference"
        if cfg.router != "expert_choice":  # the slots in the reference's order, largest score first
            assert info.expert_index[t].tolist() == [e for e, _, _ in slots]
    params = [x, *layer.parameters()]
    grads = torch.autograd.grad(y.square().sum() + info.aux_loss, params, allow_unused=True)
    grads_ref = torch.autograd.grad(y_ref.square().sum() + aux_ref, params, allow_unused=True)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        if g is not None or g_ref is not None:
            g = torch.zeros_like(g_ref) if g is None else g
            g_ref = torch.zeros_like(g) if g_ref is None else g_ref
            torch.testing.assert_close(g, g_ref, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("router", ROUTERS)
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_an_empty_batch_gives_an_empty_output_and_a_zero_aux_loss(kernel_path, router, train):
    cfg = MoEConfig(d_model=8, n_experts=4, top_k=1 if router == "switch" else 2, expert_hidden=8, router=router,
                    capacity_factor=1.0, aux_loss_coef=0.1, z_loss_coef=0.01, router_noise=0.1)
    layer = MoELayer(cfg).train(train)
    x = torch.randn(2, 0, 8, requires_grad=True)
    y, info = layer(x)
    assert y.shape == (2, 0, 8)
    assert info.expert_index.shape[0] == 0 and info.router_probs.shape == (0, 4)
    aux = float(info.aux_loss.detach())
    assert math.isfinite(aux) and aux == 0.0, f"aux_loss {aux}"
    for name, loss in info.losses.items():
        assert float(loss.detach()) == 0.0, f"{name} loss {loss}"
    if info.aux_loss.requires_grad:
        (y.sum() + info.aux_loss).backward()
        for name, p in layer.named_parameters():
            assert p.grad is None or bool(torch.isfinite(p.grad).all()), f"grad of {name}"


@pytest.mark.parametrize("router", ROUTERS)
@pytest.mark.parametrize(("x_dtype", "layer_dtype"), [(torch.float16, torch.float32), (torch.float64, torch.float32),
                                                      (torch.float32, torch.float64)])
def test_an_input_dtype_other_than_the_layers_is_refused_clearly(kernel_path, router, x_dtype, layer_dtype):
    cfg = MoEConfig(d_model=8, n_experts=4, top_k=1 if router == "switch" else 2, expert_hidden=8, router=router)
    layer = MoELayer(cfg).to(layer_dtype)
    x = torch.randn(5, 8).to(x_dtype)
    expected = (f"input dtype {x_dtype} does not match the layer's parameters ({layer_dtype}): cast the input with "
                f"x.to({layer_dtype}) or the layer with layer.to({x_dtype})")
    with pytest.raises(ValueError) as refused:
        layer(x)
    assert str(refused.value) == expected


@pytest.mark.parametrize("coefs", [(0.0, 0.0), (0.1, 0.0), (0.1, 0.01)], ids=lambda c: f"aux{c[0]}-z{c[1]}")
@pytest.mark.parametrize("capacity_factor", [None, 1.0])
@pytest.mark.parametrize("with_aux", [True, False], ids=["y+aux", "y"])
def test_renormalized_top1_router_gradient_is_the_same_on_every_path(monkeypatch, coefs, capacity_factor, with_aux):
    """k = 1 renormalized: every gate is p / p = 1, so the output sends the router a zero gradient (not None, on
    every path); only the auxiliary losses, when in the loss, move it."""
    aux_coef, z_coef = coefs
    cfg = MoEConfig(d_model=8, n_experts=4, top_k=1, expert_hidden=8, normalize_topk=True,
                    capacity_factor=capacity_factor, aux_loss_coef=aux_coef, z_loss_coef=z_coef)
    torch.manual_seed(0)
    layer = MoELayer(cfg)
    x = torch.randn(20, 8)

    def router_grad(path: str) -> torch.Tensor | None:
        with monkeypatch.context() as m:
            _use_path(m, path)
            layer.zero_grad(set_to_none=True)
            y, info = layer(x)
            (y.sum() + (info.aux_loss if with_aux else 0.0)).backward()
        return layer.router.weight.grad

    grads = {path: router_grad(path) for path in PATHS}
    for path, g in grads.items():
        assert g is not None, f"{path}: the router's gradient is None"
    torch.testing.assert_close(grads["accelerated"], grads["readable"], atol=1e-6, rtol=1e-6)
    if not with_aux or (aux_coef, z_coef) == (0.0, 0.0):
        assert not grads["readable"].any()  # nothing but the output reaches the router: exactly zero
