"""router_dtype='bfloat16': the router's logits and softmax in bfloat16, as mixed precision computes them without
Switch's selective precision (Fedus et al. 2021, §2.4). What changes against float32, what does not, and where."""

from __future__ import annotations

import pytest
import torch

from moe_core import MoEConfig, MoELayer, accelerator
from moe_core.accelerator import kernels as native
from moe_core.layer.reference import naive_moe
from moe_core.training.settings import PlaygroundSettings
from moe_core.training.trainer import Trainer


def _layer(router_dtype: str, seed: int = 0, **changes) -> MoELayer:
    torch.manual_seed(seed)
    cfg = MoEConfig(**{"d_model": 16, "n_experts": 8, "top_k": 2, "expert_hidden": 8, "router_dtype": router_dtype,
                       **changes})
    layer = MoELayer(cfg)
    with torch.no_grad():  # logits of a trained router's size (several units), not the init's hundredths
        layer.router.weight.normal_(0, 1.0)
    return layer


def _pair(**changes) -> tuple[MoELayer, MoELayer]:
    fp32, bf16 = _layer("float32", **changes), _layer("bfloat16", **changes)
    bf16.load_state_dict(fp32.state_dict())
    return fp32, bf16


def _x(T: int = 256) -> torch.Tensor:
    return torch.randn(T, 16, generator=torch.Generator().manual_seed(1))


def _bf16_exact(t: torch.Tensor) -> bool:
    return bool(torch.equal(t, t.bfloat16().float()))


def test_bfloat16_logits_and_probabilities_are_bfloat16_numbers_in_float32_tensors():
    fp32, bf16 = _pair()
    x = _x()
    _, info32 = fp32(x)
    _, info16 = bf16(x)
    for tensor in (info16.router_logits, info16.router_probs, info16.combine_weights):
        assert tensor.dtype == torch.float32 and _bf16_exact(tensor)  # rounded to 8 significant bits
    assert not _bf16_exact(info32.router_probs)
    # 256 tokens x 8 experts: float32 gives (nearly) all different probabilities, bfloat16 a few hundred values
    assert torch.unique(info16.router_probs).numel() < 0.5 * torch.unique(info32.router_probs).numel()


def test_bfloat16_routes_almost_like_float32_and_the_outputs_stay_close():
    fp32, bf16 = _pair()
    x = _x()
    y32, info32 = fp32(x)
    y16, info16 = bf16(x)
    same = (info32.expert_index.sort(1).values == info16.expert_index.sort(1).values).all(1).float().mean()
    assert same >= 0.9  # a close second and third choice may swap
    assert not torch.equal(y32, y16)
    assert (y32 - y16).abs().max() < 0.05 * y32.abs().max()
    gap = (info32.router_probs - info16.router_probs).abs().max()
    assert 0 < gap < 0.1


def test_larger_logits_round_worse():
    """ST-MoE's case for the z-loss (Zoph et al. 2022, §3.3-3.4): a bfloat16 number keeps 8 significant bits, so
    the rounding step of a logit grows with its size, and the exponential in the softmax turns an absolute error in
    a logit into a relative error in a probability."""
    x = _x()
    logit_errors, prob_errors = [], []
    for scale in (0.1, 1.0, 4.0):
        fp32, bf16 = _pair()
        with torch.no_grad():
            fp32.router.weight.mul_(scale)
        bf16.load_state_dict(fp32.state_dict())
        i32, i16 = fp32(x)[1], bf16(x)[1]
        logit_errors.append(float((i16.router_logits - i32.router_logits).abs().max()))
        prob_errors.append(float((i16.router_probs - i32.router_probs).abs().max()))
    assert logit_errors[0] < logit_errors[1] < logit_errors[2]
    assert logit_errors[2] > 10 * logit_errors[0]
    assert prob_errors[0] < prob_errors[2]


def test_gradients_reach_the_float32_router_weights():
    _, bf16 = _pair()
    bf16.train()
    y, info = bf16(_x())
    (y.square().mean() + info.aux_loss).backward()
    grad = bf16.router.weight.grad
    assert grad is not None and grad.dtype == torch.float32 and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.skipif(native.kernels() is None, reason="the C kernels are not built here")
def test_bfloat16_bypasses_the_float32_c_layer():
    fp32, bf16 = _pair()
    x = _x()
    assert accelerator.forward(fp32, x, None) is not None
    assert accelerator.forward(bf16, x, None) is None  # the readable layer, in bfloat16


@pytest.mark.parametrize("native_off", [False, True], ids=["C kernels", "torch ops"])
@pytest.mark.parametrize("router", ["softmax_topk", "switch"])
def test_bfloat16_router_matches_the_per_token_reference(router, native_off, monkeypatch):
    if native_off:
        monkeypatch.setenv("MOE_PLAYGROUND_NATIVE", "0")
    layer = _layer("bfloat16", router=router, top_k=1 if router == "switch" else 2, capacity_factor=1.0,
                   aux_loss_coef=0.1, z_loss_coef=0.01)
    layer.eval()
    x = _x(64)
    y, info = layer(x)
    y_ref, aux_ref, decisions = naive_moe(layer, x)
    ref_index = torch.tensor([[e for e, _, _ in row] for row in decisions])
    agree = (ref_index == info.expert_index).all(1)
    assert agree.float().mean() >= 0.95  # the same bfloat16 logits; ties in bfloat16 may break differently
    scale = y_ref.abs().max()
    assert (y[agree] - y_ref[agree]).abs().max() <= 0.02 * scale  # one bfloat16 step in the gates, at most
    assert info.aux_loss.item() == pytest.approx(aux_ref.item(), rel=0.02)


def test_config_and_settings_validate_the_precision():
    with pytest.raises(ValueError, match="router_dtype"):
        MoEConfig(router_dtype="float16")
    with pytest.raises(ValueError, match="router_dtype='bfloat16' is not allowed with router 'hash'"):
        MoEConfig(router="hash", router_dtype="bfloat16")
    s = PlaygroundSettings(router_dtype="bfloat16")
    assert s.to_query_params() == {"router_dtype": "bfloat16"}
    assert PlaygroundSettings.from_query_params(s.to_query_params()) == (s, [])
    assert s.to_configs()[0].moe.router_dtype == "bfloat16"
    parsed, warnings = PlaygroundSettings.from_query_params({"router_dtype": "half"})
    assert parsed.router_dtype == "float32" and "not one of float32, bfloat16" in warnings[0]
    fixed, notes = PlaygroundSettings.from_query_params({"router_dtype": "bfloat16", "router": "sigmoid_bias"})
    assert fixed.router_dtype == "float32" and fixed.router == "sigmoid_bias"
    assert "router precision set to float32" in notes[0]
    with pytest.raises(ValueError, match="router_dtype='bfloat16': allowed only with the routers"):
        PlaygroundSettings(router="dense", router_dtype="bfloat16")


def test_training_is_deterministic_and_the_precision_changes_live():
    def run(changes: dict) -> Trainer:
        model, data, train = PlaygroundSettings(**{"router_dtype": "bfloat16", **changes}).to_configs()
        trainer = Trainer(model, data, train)
        trainer.step(20)
        return trainer

    a, b = run({}), run({})
    assert a.history["task_loss"].tolist() == b.history["task_loss"].tolist()
    fp32 = run({"router_dtype": "float32"})
    assert a.history["task_loss"].tolist() != fp32.history["task_loss"].tolist()
    a.set_hyperparameters(router_dtype="float32")  # no reset: the next steps route in float32
    a.step(1)
    _, infos = a.model(a.tensors.x_test)
    assert not _bf16_exact(infos[0].router_probs)
