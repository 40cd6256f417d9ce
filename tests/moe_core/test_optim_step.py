"""fused_adamw_step against torch.optim.AdamW.step(): bit-identical weights and state, step after step."""

from __future__ import annotations

import copy

import pytest
import torch
from torch_devices import DEVICES

from moe_core.optim_step import fused_adamw_step


def _model(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.Linear(16, 3)).to(device)


def _grads(model: torch.nn.Module, step: int, skip_last: bool = False) -> None:
    g = torch.Generator().manual_seed(step)
    for i, p in enumerate(model.parameters()):
        p.grad = None if skip_last and i == 3 else torch.randn(p.shape, generator=g).to(p.device)


@pytest.mark.parametrize("device", [d for d in DEVICES if d in ("cpu", "cuda")])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_direct_step_equals_optimizer_step(device, weight_decay):
    a = _model(device)
    b = copy.deepcopy(a)
    opt_a = torch.optim.AdamW(a.parameters(), lr=1e-2, weight_decay=weight_decay, fused=True)
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=weight_decay, fused=True)
    for step in range(12):
        if step == 6:  # a live learning-rate change, as the Playground's slider makes
            for opt in (opt_a, opt_b):
                opt.param_groups[0]["lr"] = 3e-3
        skip = 3 <= step < 5  # a parameter with no gradient for a while, then back
        _grads(a, step, skip)
        _grads(b, step, skip)
        opt_a.step()
        fused_adamw_step(opt_b)
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            assert torch.equal(pa, pb), f"step {step}"
            for key in ("exp_avg", "exp_avg_sq", "step"):
                assert torch.equal(opt_a.state[pa][key], opt_b.state[pb][key]), f"{key} at step {step}"


def test_parameters_without_state_yet_go_through_the_optimizer():
    model = _model("cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    _grads(model, 0, skip_last=True)
    fused_adamw_step(opt)  # the first step creates the state of the parameters that have a gradient
    assert len(opt.state) == 3
    _grads(model, 1)
    before = [p.detach().clone() for p in model.parameters()]
    fused_adamw_step(opt)  # the fourth parameter has no state: the optimizer's own step makes it
    assert len(opt.state) == 4
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))


def test_unfused_optimizers_use_their_own_step():
    model = _model("cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, foreach=False)
    ref = copy.deepcopy(model)
    opt_ref = torch.optim.AdamW(ref.parameters(), lr=1e-2, foreach=False)
    for step in range(3):
        _grads(model, step)
        _grads(ref, step)
        fused_adamw_step(opt)
        opt_ref.step()
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p, q)
