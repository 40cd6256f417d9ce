"""The same contracts on every device this machine has: the CPU always, plus CUDA (and MPS) where present.

CI runs the CPU cases; on a GPU machine the same tests run again on CUDA (`pytest tests/moe_core/test_devices.py`),
so nothing in the layer, the trainer, snapshots, checkpoints or the CLI assumes tensors live on the CPU.
Device results are compared with the float64 per-token reference computed on the CPU.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch_devices import DEVICES

from moe_core import MoEConfig, MoELayer
from moe_core.cli.main import main
from moe_core.layer.reference import naive_moe
from moe_core.training.datasets import DataConfig
from moe_core.training.models import ModelConfig
from moe_core.training.trainer import TrainConfig, Trainer

TOL32 = 2e-4  # float32 on the device against the float64 reference on the CPU

ROUTERS = [
    dict(router="softmax_topk", top_k=2, capacity_factor=1.0),
    dict(router="noisy_topk", top_k=2, capacity_factor=1.0),
    dict(router="switch", top_k=1, capacity_factor=0.5, overflow_policy="probability"),
    dict(router="expert_choice", top_k=2),
    dict(router="hash", top_k=2),
    dict(router="soft", top_k=1),
    dict(router="sigmoid_bias", top_k=2, capacity_factor=1.25),
    dict(router="dense", top_k=1, n_shared_experts=1),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", ROUTERS, ids=lambda c: c["router"])
def test_layer_on_device_matches_the_cpu_reference(device, case):
    cfg = MoEConfig(d_model=16, n_experts=4, expert_hidden=16, aux_loss_coef=0.1, z_loss_coef=0.01, **case)
    torch.manual_seed(0)
    ref_layer = MoELayer(cfg).double().train()
    if cfg.router == "noisy_topk":
        with torch.no_grad():
            ref_layer.router.weight.normal_(0, 0.5)
            ref_layer.router.noise_weight.normal_(0, 0.5)
    if cfg.router == "sigmoid_bias":
        ref_layer.router.bias.copy_(torch.linspace(-0.3, 0.3, cfg.n_experts))
    T = 32
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, cfg.d_model, generator=g, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(T, cfg.d_model, generator=g, dtype=torch.float64)
    noise = None
    if cfg.router == "noisy_topk":
        noise = torch.randn(T, cfg.n_experts, generator=g, dtype=torch.float64)
    elif cfg.router == "soft":
        noise = torch.randn(T, cfg.n_experts * cfg.slots_per_expert, generator=g, dtype=torch.float64)

    y_ref, aux_ref, _ = naive_moe(ref_layer, x, noise=noise)
    params_ref = list(ref_layer.parameters())
    grads_ref = torch.autograd.grad((y_ref * probe).sum() + aux_ref, [x, *params_ref])

    layer = copy.deepcopy(ref_layer).float().to(device)
    xd = x.detach().float().to(device).requires_grad_(True)
    y, info = layer(xd, noise=None if noise is None else noise.float().to(device))
    assert y.device.type == device and info.router_probs.device.type == device
    grads = torch.autograd.grad((y * probe.float().to(device)).sum() + info.aux_loss, [xd, *layer.parameters()],
                                allow_unused=True)
    torch.testing.assert_close(y.cpu().double(), y_ref.detach(), atol=TOL32, rtol=TOL32)
    torch.testing.assert_close(info.aux_loss.cpu().double(), aux_ref.detach(), atol=TOL32, rtol=TOL32)
    names = ["x", *(n for n, _ in ref_layer.named_parameters())]
    for name, gd, gr in zip(names, grads, grads_ref, strict=True):
        gd = torch.zeros_like(gr) if gd is None else gd.cpu().double()
        torch.testing.assert_close(gd, gr, atol=TOL32, rtol=TOL32, msg=lambda m, n=name: f"grad of {n}: {m}")


@pytest.mark.parametrize("device", DEVICES)
def test_sigmoid_bias_update_runs_on_device(device):
    cfg = MoEConfig(d_model=8, n_experts=4, top_k=1, expert_hidden=8, router="sigmoid_bias", bias_update_rate=0.1)
    layer = MoELayer(cfg).to(device).train()
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[0] += 1.0  # every token prefers expert 0
    x = torch.ones(16, 8, device=device)
    layer(x)
    layer.update_router_bias()
    bias = layer.router.bias.cpu()
    assert bias.device.type == "cpu" and layer.router.bias.device.type == device
    assert bias[0] < 0 and (bias[1:] > 0).all()  # the overloaded expert is pushed down, the idle ones up


def _trainer(device: str, dataset: str = "spirals", **model) -> Trainer:
    moe = MoEConfig(d_model=32, n_experts=8, top_k=2, expert_hidden=32, capacity_factor=1.25, aux_loss_coef=0.01)
    mc = ModelConfig(moe, **model)
    return Trainer(mc, DataConfig(dataset=dataset, n_samples=800), TrainConfig(batch_size=128, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_trainer_learns_snapshots_and_checkpoints_on_device(device, tmp_path):
    t = _trainer(device)
    assert all(p.device.type == device for p in t.model.parameters())
    t.step(300)
    h = t.history
    assert not t.diverged and h["loss"].map(math.isfinite).all()
    assert h["accuracy"].tail(20).mean() > 0.7  # spirals are learnable in 300 steps at lr 3e-3
    assert h["loss"].tail(20).mean() < h["loss"].head(20).mean()
    snap = t.snapshot(grid_size=16)
    layer = snap.layers[0]
    assert layer.grid_probs.shape == (16, 16, 8)
    assert abs(float(layer.tokens_per_expert.sum()) - 2 * 128) < 1e-6

    t.set_hyperparameters(lr=1e-3, capacity_factor=0.5, router_noise=0.1)
    t.step(5)
    assert t.history["dropped_frac"].iloc[-1] > 0  # capacity 0.5 must drop slots

    path = tmp_path / "ckpt.pt"
    t.save_checkpoint(path)
    back = Trainer.from_checkpoint(path, device="cpu")
    x = torch.randn(64, 2)
    t.model.eval()
    back.model.eval()
    with torch.no_grad():
        out_dev, _ = t.model(x.to(device))
        out_cpu, _ = back.model(x)
    torch.testing.assert_close(out_dev.cpu(), out_cpu, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_run_on_device(device):
    a, b = _trainer(device), _trainer(device)
    a.step(40)
    b.step(40)
    la, lb = a.history["loss"].to_numpy(), b.history["loss"].to_numpy()
    if device == "cpu":
        assert (la == lb).all()  # bit for bit
    else:  # index_add's atomics on a GPU may sum in another order: equal up to float32 rounding
        assert abs(la - lb).max() < 1e-3


@pytest.mark.parametrize("device", DEVICES)
def test_language_model_trains_on_device(device):
    t = Trainer(ModelConfig(MoEConfig(d_model=32, n_experts=4, top_k=2, expert_hidden=32), n_layers=2, n_heads=2,
                            context=32),
                DataConfig(dataset="tokens", n_samples=400), TrainConfig(batch_size=16, device=device))
    t.step(60)
    h = t.history
    assert not t.diverged and h["loss"].iloc[-10:].mean() < h["loss"].iloc[:10].mean()
    snap = t.snapshot()
    assert snap.layers and snap.layers[0].tokens_per_expert.sum() > 0


@pytest.mark.parametrize("device", DEVICES)
def test_cli_trains_on_device(device, tmp_path):
    out = tmp_path / "m.csv"
    code = main(["train", "--steps", "10", "--samples", "200", "--batch-size", "32", "--experts", "4",
                 "--device", device, "--quiet", "--metrics-out", str(out)])
    assert code == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 11 and lines[0].startswith("step,")
