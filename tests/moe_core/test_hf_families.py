"""MoELayer reproduces the MoE blocks of real model families, as transformers implements them.

For each family (Mixtral, Qwen2-MoE with its gated shared expert, Qwen3-MoE, OLMoE, Granite-MoE, DeepSeek-V3
with group-limited routing, bias and routed scaling), a tiny transformers block is built from the family's config
class, its weights are copied into an MoELayer, and both run in float64 on the same tokens: outputs and gradients
(input and every weight) agree to 1e-12. No network: config classes and random weights only.

transformers computes every router in float32 whatever the input (Mixtral's `.float()`, Qwen/OLMoE's
`softmax(dtype=torch.float)`, DeepSeek-V3's `.type(torch.float32)`), which alone would leave ~1e-8 of rounding.
The comparison runs transformers' own, unmodified code under a TorchFunctionMode that keeps those casts in
float64; test_transformers_as_is_float32_router_rounding checks the blocks without it (same experts, outputs to
float32 rounding).

The layer's new options are also held to the slow per-token reference (moe_core/layer/reference.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch.overrides import TorchFunctionMode

from moe_core import MoEConfig, MoELayer
from moe_core.accelerator import kernels as native
from moe_core.layer.reference import naive_moe

transformers = pytest.importorskip("transformers")
from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE  # noqa: E402
from transformers.models.granitemoe.modeling_granitemoe import GraniteMoeMoE  # noqa: E402
from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock  # noqa: E402
from transformers.models.olmoe.modeling_olmoe import OlmoeSparseMoeBlock  # noqa: E402
from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock  # noqa: E402
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock  # noqa: E402

TOL = 1e-12
D, H = 16, 8  # model width, expert hidden width


@pytest.fixture(autouse=True, params=["accelerated", "readable"])
def kernel_path(request, monkeypatch):
    """Both paths: the accelerator where it applies (the softmax top-k families; the shared expert and its gate
    are added outside it) with its C matmul, and the readable layer alone (MOE_PLAYGROUND_NATIVE=0)."""
    if request.param == "readable":
        monkeypatch.setenv("MOE_PLAYGROUND_NATIVE", "0")
    else:
        monkeypatch.setattr(native, "_gemm_vectorized", lambda lib: True)
    return request.param


class Float64Routers(TorchFunctionMode):
    """Runs transformers' code with its float32 casts of float64 tensors left in float64 (`.float()`,
    `.type(torch.float32)`, `.to(torch.float32)`, `dtype=torch.float32`); nothing else changes."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        first = args[0] if args else None
        is_f64 = isinstance(first, torch.Tensor) and first.dtype == torch.float64
        if is_f64 and func is torch.Tensor.float:
            return first
        if is_f64 and func in (torch.Tensor.type, torch.Tensor.to) and torch.float32 in (*args[1:], *kwargs.values()):
            return first
        if kwargs.get("dtype") is torch.float32:
            kwargs["dtype"] = torch.float64
        return func(*args, **kwargs)


@dataclass(frozen=True)
class Family:
    name: str
    block: Callable[[], torch.nn.Module]  # the tiny transformers block
    ours: MoEConfig  # the MoELayer that should compute the same
    router: str = "gate"  # the block's router attribute


def _hf(config_cls, block_cls, **fields) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        config = config_cls(hidden_size=D, hidden_act="silu", **fields)
        config._experts_implementation = "eager"  # the per-expert loop: transformers' reference form
        return block_cls(config)
    return build


FAMILIES = [
    Family("mixtral", _hf(transformers.MixtralConfig, MixtralSparseMoeBlock, intermediate_size=H,
                          num_local_experts=8, num_experts_per_tok=2),
           MoEConfig(d_model=D, n_experts=8, top_k=2, expert_hidden=H)),
    Family("qwen2_moe", _hf(transformers.Qwen2MoeConfig, Qwen2MoeSparseMoeBlock, moe_intermediate_size=H,
                            shared_expert_intermediate_size=2 * H, num_experts=8, num_experts_per_tok=3,
                            norm_topk_prob=False),  # Qwen1.5-MoE's default
           MoEConfig(d_model=D, n_experts=8, top_k=3, expert_hidden=H, normalize_topk=False, n_shared_experts=2,
                     shared_expert_gate=True)),
    Family("qwen2_moe_norm", _hf(transformers.Qwen2MoeConfig, Qwen2MoeSparseMoeBlock, moe_intermediate_size=H,
                                 shared_expert_intermediate_size=H, num_experts=6, num_experts_per_tok=2,
                                 norm_topk_prob=True),
           MoEConfig(d_model=D, n_experts=6, top_k=2, expert_hidden=H, n_shared_experts=1, shared_expert_gate=True)),
    Family("qwen3_moe", _hf(transformers.Qwen3MoeConfig, Qwen3MoeSparseMoeBlock, moe_intermediate_size=H,
                            num_experts=8, num_experts_per_tok=2, norm_topk_prob=True),
           MoEConfig(d_model=D, n_experts=8, top_k=2, expert_hidden=H)),
    Family("olmoe", _hf(transformers.OlmoeConfig, OlmoeSparseMoeBlock, intermediate_size=H, num_experts=8,
                        num_experts_per_tok=2, norm_topk_prob=False),  # OLMoE-1B-7B ships it off
           MoEConfig(d_model=D, n_experts=8, top_k=2, expert_hidden=H, normalize_topk=False)),
    # top-k of the logits, softmax over those k: the same experts and weights as softmax, top-k, renormalize
    Family("granitemoe", _hf(transformers.GraniteMoeConfig, GraniteMoeMoE, intermediate_size=H,
                             num_local_experts=8, num_experts_per_tok=2),
           MoEConfig(d_model=D, n_experts=8, top_k=2, expert_hidden=H), router="router"),
    # 16 experts in 4 groups of 4, each token limited to its 2 best groups, 4 experts, one shared expert
    Family("deepseek_v3", _hf(transformers.DeepseekV3Config, DeepseekV3MoE, moe_intermediate_size=H,
                              n_routed_experts=16, num_experts_per_tok=4, n_group=4, topk_group=2,
                              n_shared_experts=1, norm_topk_prob=True, routed_scaling_factor=2.5),
           MoEConfig(d_model=D, n_experts=16, top_k=4, expert_hidden=H, router="sigmoid_bias", n_group=4,
                     topk_group=2, routed_scaling_factor=2.5, n_shared_experts=1)),
]


def _shared_module(block: torch.nn.Module) -> torch.nn.Module | None:
    return getattr(block, "shared_expert", None) or getattr(block, "shared_experts", None)


def _copy_weights(ours: MoELayer, block: torch.nn.Module, family: Family) -> None:
    """Our weights into the transformers block: W_in (E, d, 2h) = [gate | up] is gate_up_proj (E, 2h, d)
    transposed; W_out (E, h, d) is down_proj (E, d, h) transposed; the shared SwiGLU's [gate | up] rows are
    gate_proj and up_proj."""
    with torch.no_grad():
        router = getattr(block, family.router)
        router.weight.copy_(ours.router.weight)
        if hasattr(router, "e_score_correction_bias"):
            router.e_score_correction_bias.copy_(ours.router.bias)
        block.experts.gate_up_proj.copy_(ours.experts.w_in.transpose(1, 2))
        block.experts.down_proj.copy_(ours.experts.w_out.transpose(1, 2))
        shared = _shared_module(block)
        if shared is not None:
            gate, up = ours.shared.w_in.weight.chunk(2, dim=0)  # (h_s, d) each
            shared.gate_proj.weight.copy_(gate)
            shared.up_proj.weight.copy_(up)
            shared.down_proj.weight.copy_(ours.shared.w_out.weight)
        if getattr(block, "shared_expert_gate", None) is not None:
            block.shared_expert_gate.weight.copy_(ours.shared_gate.weight)


def _matching_params(ours: MoELayer, block: torch.nn.Module, family: Family) -> list[tuple[str, torch.Tensor,
                                                                                        torch.Tensor]]:
    """(name, our gradient, transformers' gradient in our layout) for every weight."""
    pairs = [("router", ours.router.weight.grad, getattr(block, family.router).weight.grad),
             ("w_in", ours.experts.w_in.grad, block.experts.gate_up_proj.grad.transpose(1, 2)),
             ("w_out", ours.experts.w_out.grad, block.experts.down_proj.grad.transpose(1, 2))]
    shared = _shared_module(block)
    if shared is not None:
        pairs += [("shared w_in", ours.shared.w_in.weight.grad,
                   torch.cat([shared.gate_proj.weight.grad, shared.up_proj.weight.grad])),
                  ("shared w_out", ours.shared.w_out.weight.grad, shared.down_proj.weight.grad)]
    if getattr(block, "shared_expert_gate", None) is not None:
        pairs.append(("shared gate", ours.shared_gate.weight.grad, block.shared_expert_gate.weight.grad))
    return pairs


def _run_both(family: Family, seed: int, float64_routers: bool = True):
    """(ours, block, x_ours, x_hf, y_ours, y_hf) after one backward of the same random probe through each."""
    torch.manual_seed(seed)
    ours = MoELayer(family.ours).double()
    with torch.no_grad():
        ours.router.weight.normal_(0.0, 0.5)  # spread the scores, so that the routing is far from ties
        if family.ours.router == "sigmoid_bias":  # a non-zero bias: selection differs from the plain top-k
            ours.router.bias.normal_(0.0, 0.1)
    block = family.block().double()
    _copy_weights(ours, block, family)
    x = torch.randn(3, 11, D, dtype=torch.float64)  # (B, S, d)
    probe = torch.randn_like(x)
    x_ours, x_hf = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, _ = ours(x_ours)
    if float64_routers:
        with Float64Routers():
            y_hf = block(x_hf)
    else:
        y_hf = block(x_hf)
    (y_ours * probe).sum().backward()
    (y_hf * probe).sum().backward()
    return ours, block, x_ours, x_hf, y_ours, y_hf


def max_differences(family: Family, seed: int) -> dict[str, float]:
    """Largest absolute difference of the output and of each gradient (the test's figures)."""
    ours, block, x_ours, x_hf, y_ours, y_hf = _run_both(family, seed)
    diffs = {"output": (y_ours - y_hf).abs().max().item(), "grad x": (x_ours.grad - x_hf.grad).abs().max().item()}
    for name, g_ours, g_hf in _matching_params(ours, block, family):
        diffs[f"grad {name}"] = (g_ours - g_hf).abs().max().item()
    return diffs


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_layer_reproduces_the_transformers_block(family, seed):
    ours, block, x_ours, x_hf, y_ours, y_hf = _run_both(family, seed)
    torch.testing.assert_close(y_ours, y_hf, atol=TOL, rtol=TOL)
    torch.testing.assert_close(x_ours.grad, x_hf.grad, atol=TOL, rtol=TOL)
    for name, g_ours, g_hf in _matching_params(ours, block, family):
        torch.testing.assert_close(g_ours, g_hf, atol=TOL, rtol=TOL, msg=lambda m, n=name: f"grad of {n}: {m}")


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_transformers_as_is_float32_router_rounding(family):
    """Without Float64Routers: transformers' float32 router leaves float32 rounding in the gates, no more."""
    ours, block, _, _, y_ours, y_hf = _run_both(family, seed=3, float64_routers=False)
    torch.testing.assert_close(y_ours, y_hf, atol=1e-5, rtol=1e-5)


def test_group_limit_changes_the_choice():
    """With n_group > 1 some token gets experts that plain top-k of the biased scores would not choose."""
    torch.manual_seed(0)
    cfg = MoEConfig(d_model=D, n_experts=16, top_k=4, expert_hidden=H, router="sigmoid_bias", n_group=4,
                    topk_group=2)
    grouped = MoELayer(cfg).double()
    plain = MoELayer(cfg.replace(n_group=1, topk_group=1)).double()
    plain.load_state_dict(grouped.state_dict())
    x = torch.randn(64, D, dtype=torch.float64)
    index = grouped(x)[1].expert_index  # (T, k)
    assert not torch.equal(index.sort(dim=1).values, plain(x)[1].expert_index.sort(dim=1).values)
    assert ((index // 4)[:, :, None] != (index // 4)[:, None, :]).sum(dim=(1, 2)).max() > 0  # 2 groups used
    assert torch.stack([(index // 4 == g).any(dim=1) for g in range(4)], dim=1).sum(dim=1).max() <= 2


REFERENCE_CASES = [
    dict(router="sigmoid_bias", n_experts=12, top_k=3, n_group=4, topk_group=2, routed_scaling_factor=2.5),
    dict(router="sigmoid_bias", n_experts=12, top_k=2, n_group=3, topk_group=1, n_shared_experts=1),
    dict(router="sigmoid_bias", n_experts=8, top_k=2, normalize_topk=False, routed_scaling_factor=1.5),
    dict(router="softmax_topk", n_experts=8, top_k=2, n_shared_experts=2, shared_expert_gate=True),
    dict(router="sigmoid_bias", n_experts=8, top_k=2, n_shared_experts=1, shared_expert_gate=True),
]


@pytest.mark.parametrize("capacity_factor", [None, 0.75])
@pytest.mark.parametrize("case", REFERENCE_CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_new_options_match_the_reference(case, capacity_factor):
    torch.manual_seed(0)
    cfg = MoEConfig(d_model=12, expert_hidden=8, capacity_factor=capacity_factor, aux_loss_coef=0.1, **case)
    layer = MoELayer(cfg).double()
    if cfg.router == "sigmoid_bias":
        layer.router.bias.copy_(torch.linspace(-0.3, 0.3, cfg.n_experts))
    x = torch.randn(20, 12, dtype=torch.float64, requires_grad=True)
    probe = torch.randn(20, 12, dtype=torch.float64)
    params = [x, *layer.parameters()]
    y, info = layer(x)
    grads = torch.autograd.grad((y * probe).sum() + info.aux_loss, params)
    y_ref, aux_ref, _ = naive_moe(layer, x)
    grads_ref = torch.autograd.grad((y_ref * probe).sum() + aux_ref, params)
    torch.testing.assert_close(y, y_ref, atol=TOL, rtol=TOL)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref, atol=TOL, rtol=TOL)


@pytest.mark.parametrize("fields, message", [
    (dict(router="softmax_topk", n_group=2, topk_group=1), "n_group=2 is not allowed with router 'softmax_topk'"),
    (dict(router="sigmoid_bias", n_experts=8, n_group=3), "n_group=3 is not allowed with n_experts=8"),
    (dict(router="sigmoid_bias", n_experts=8, n_group=8), "groups of at least 2"),
    (dict(router="sigmoid_bias", n_experts=8, n_group=2, topk_group=3), "topk_group"),
    (dict(router="sigmoid_bias", n_experts=8, top_k=5, n_group=4, topk_group=2), "a token chooses among 4"),
    (dict(router="switch", top_k=1, routed_scaling_factor=2.0), "routed_scaling_factor=2.0 is not allowed"),
    (dict(routed_scaling_factor=0.0), "routed_scaling_factor"),
    (dict(shared_expert_gate=True), "shared_expert_gate=True is not allowed with n_shared_experts=0"),
])
def test_invalid_real_model_fields_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        MoEConfig(**fields)


def test_the_accelerator_computes_the_gated_shared_expert_configs():
    """Qwen2-MoE's gate sits outside the accelerated part: the accelerator still takes the routed experts."""
    from moe_core import accelerator
    layer = MoELayer(MoEConfig(n_shared_experts=1, shared_expert_gate=True))
    assert accelerator.softmax_topk_form(layer) == (2, True)
