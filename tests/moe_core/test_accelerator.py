"""The accelerator (moe_core/accelerator: the whole softmax top-k layer in one C call each way, native/layer.c)
against the readable layer (MoELayer.route_and_mix), values and gradients for every configuration it accepts, and
where it applies. The readable layer itself is checked against the per-token reference in
test_layer_vs_reference.py."""

from __future__ import annotations

import pytest
import torch

import moe_core.accelerator.kernels as native
from moe_core import MoEConfig, MoELayer, accelerator

pytestmark = pytest.mark.skipif(native.kernels() is None, reason="the C kernels are not built (no compiler, or "
                                "MOE_PLAYGROUND_NATIVE=0); CI builds them")


def accelerated(layer: MoELayer, x: torch.Tensor) -> bool:
    """Whether layer(x) would run on the accelerator (asked without drawing any jitter)."""
    with torch.no_grad():
        training = layer.training
        layer.eval()
        try:
            return accelerator.forward(layer, x, None) is not None
        finally:
            layer.train(training)


@pytest.fixture(autouse=True)
def c_matmul_on(monkeypatch):
    """Test the C code whatever compiler built it: where the matmul has no vector build (moe_gemm_vectorized = 0,
    e.g. clang < 19 on x86) the layer would keep torch's matmuls for speed, but the code must be right anyway."""
    monkeypatch.setattr(native, "_gemm_vectorized", lambda lib: True)

CASES = [
    dict(),
    dict(top_k=1),  # renormalized top-1: every gate is 1, tokens copied back
    dict(top_k=1, normalize_topk=False),
    dict(router="switch", top_k=1),
    dict(capacity_factor=0.5),  # drops: an expert keeps its first C pairs
    dict(capacity_factor=1.0, top_k=1),
    dict(router="switch", top_k=1, capacity_factor=0.7),
    dict(router_noise=0.1),  # the router sees a jittered copy of x
    dict(z_loss_coef=0.01),  # the z-loss trained
    dict(n_shared_experts=1),
    dict(top_k=3, normalize_topk=False, aux_loss_coef=0.0),
    dict(n_experts=1, top_k=1),
]


def _run(layer, x, fused, probe):
    """(outputs, gradients) of <y, probe> + aux + 0.3 load_balance + 0.2 z, the layer run one way or the other."""
    for p in [x, *layer.parameters()]:
        p.grad = None
    layer.router.generator = torch.Generator().manual_seed(3)  # the same jitter draw on both paths
    assert accelerated(layer, x)
    if fused:
        y, info = layer(x)
    else:
        y, info = layer.route_and_mix(x, None, None)
        if layer.shared is not None:
            y = y + layer.shared(x)
    loss = (y * probe).sum() + info.aux_loss + 0.3 * info.losses["load_balance"]
    if info.losses["z"].requires_grad:
        loss = loss + 0.2 * info.losses["z"]
    loss.backward()
    outputs = [y, info.aux_loss, info.losses["load_balance"], info.losses["z"], info.router_logits,
               info.router_probs, info.expert_index, info.combine_weights, info.dropped, info.selected,
               info.tokens_per_expert, info.kept_per_expert]
    return outputs, info, [x.grad, *[p.grad for p in layer.parameters()]]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_accelerator_matches_the_readable_layer(dtype, case):
    cfg = MoEConfig(**{"d_model": 24, "n_experts": 6, "top_k": 2, "expert_hidden": 20, **case})
    torch.manual_seed(0)
    layer = MoELayer(cfg).to(dtype).train()
    x = torch.randn(50, 24, dtype=dtype, requires_grad=True)
    probe = torch.randn(50, 24, dtype=dtype)
    got, info, got_grads = _run(layer, x, True, probe)
    want, _, want_grads = _run(layer, x, False, probe)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        if a.dtype in (torch.bool, torch.long):
            assert torch.equal(a, b), f"output {i}"
        else:
            torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=lambda m, i=i: f"output {i}: {m}")
    for i, (a, b) in enumerate(zip(got_grads, want_grads, strict=True)):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=lambda m, i=i: f"gradient {i}: {m}")
    assert info.losses["z"].requires_grad == (cfg.z_loss_coef > 0)
    if cfg.capacity_factor is not None:
        assert int(info.dropped.sum()) == int((info.tokens_per_expert - info.kept_per_expert).sum()) > 0


@pytest.mark.parametrize("case", [dict(), dict(capacity_factor=0.5), dict(top_k=1, router_noise=0.2)])
def test_gradcheck(case):
    cfg = MoEConfig(**{"d_model": 5, "n_experts": 4, "top_k": 2, "expert_hidden": 3, "z_loss_coef": 0.1,
                       "aux_loss_coef": 0.5, **case})
    torch.manual_seed(1)
    layer = MoELayer(cfg).double().train()
    x = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)
    noise = None
    if cfg.router_noise:
        noise = 1 + cfg.router_noise * (2 * torch.rand(9, 5, dtype=torch.float64) - 1)
    params = [x, *layer.parameters()]
    assert accelerated(layer, x)

    def f(*inputs):
        with torch.nn.utils.stateless._reparametrize_module(
                layer, dict(zip([n for n, _ in layer.named_parameters()], inputs[1:], strict=True))):
            y, info = layer(inputs[0], noise=noise)
        return y, info.aux_loss, info.losses["load_balance"], info.losses["z"]

    assert torch.autograd.gradcheck(f, params)


@pytest.mark.parametrize(("case", "why"), [
    (dict(capacity_factor=1.0, overflow_policy="probability"), "probability priority sorts by score"),
    (dict(router_dtype="bfloat16"), "a bfloat16 router is rounded by torch's bfloat16 ops"),
    (dict(top_k=accelerator.MAX_K + 1, n_experts=12), "the C top-k is for small k"),
    *[(dict(router=r), "another router") for r in ("noisy_topk", "sigmoid_bias", "gshard_top2", "expert_choice",
                                                     "hash", "soft", "dense")],
])
def test_configurations_the_accelerator_leaves_to_the_readable_layer(case, why):
    layer = MoELayer(MoEConfig(**{"d_model": 8, "n_experts": 4, "top_k": 2, "expert_hidden": 8, **case}))
    assert not accelerated(layer, torch.randn(10, 8)), why


def test_the_accelerator_is_not_used_off_its_inputs(monkeypatch):
    layer = MoELayer(MoEConfig(d_model=8, n_experts=4, top_k=2, expert_hidden=8))
    x = torch.randn(10, 8)
    assert accelerated(layer, x)
    assert not accelerated(layer, x.t().contiguous().t())  # strided
    assert not accelerated(layer, torch.zeros(0, 8))  # no tokens
    assert not accelerated(layer.to(torch.bfloat16), x.to(torch.bfloat16))
    layer = layer.float()
    monkeypatch.setattr(accelerator, "EXPERT_WEIGHTS_LIMIT", 8 * 16 - 1)  # experts too big for the C matmul
    assert not accelerated(layer, x)
    monkeypatch.undo()
    monkeypatch.setattr(native, "_gemm_vectorized", lambda lib: False)  # a baseline build: torch's matmuls win
    assert not accelerated(layer, x)
    monkeypatch.undo()
    monkeypatch.setenv("MOE_PLAYGROUND_NATIVE", "0")
    assert not accelerated(layer, x)
    y, info = layer(torch.zeros(0, 8))  # no tokens: the readable layer, with a finite aux loss
    assert y.shape == (0, 8) and torch.isfinite(info.aux_loss)


def test_no_grad_and_inputs_without_gradients():
    """The views run the layer under no_grad (nothing is kept for a backward), and a layer may get an input that
    needs no gradient: the weights' gradients are the same as when it does."""
    torch.manual_seed(2)
    layer = MoELayer(MoEConfig(d_model=16, n_experts=4, top_k=2, expert_hidden=8))
    x = torch.randn(30, 16)
    with torch.no_grad():
        y0, info0 = layer(x)
    y1, info1 = layer(x)
    torch.testing.assert_close(y0, y1)
    assert not y0.requires_grad and info0.aux_loss.requires_grad is False
    (y1.square().sum() + info1.aux_loss).backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    xg = x.clone().requires_grad_()
    y2, info2 = layer(xg)
    (y2.square().sum() + info2.aux_loss).backward()
    for a, p in zip(grads, layer.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)


@pytest.mark.parametrize("fused", [True, False])
def test_router_jitter_is_drawn_once_per_forward_on_either_path(monkeypatch, fused):
    """The accelerator draws the jitter itself (through the router): one (T, d) draw per forward either way."""
    layer = MoELayer(MoEConfig(d_model=8, n_experts=4, top_k=2, expert_hidden=8, router_noise=0.1)).train()
    if not fused:
        monkeypatch.setattr(accelerator, "EXPERT_WEIGHTS_LIMIT", 0)
    x = torch.randn(10, 8)
    assert accelerated(layer, x) == fused
    layer.router.generator = torch.Generator().manual_seed(5)
    layer(x)
    expected = torch.Generator().manual_seed(5)
    torch.empty(10, 8).uniform_(0.9, 1.1, generator=expected)  # one draw of the (T, d) jitter
    assert torch.equal(layer.router.generator.get_state(), expected.get_state())
