"""The accelerator: MoELayer's whole forward and backward as one C call each way, where it applies.

Why: at the Playground's sizes (256 tokens, 8 experts) the readable layer is ~60 small torch ops and a dozen
autograd nodes each way, and each op costs more in dispatch (~5 us) than in arithmetic; at 4096 tokens its
elementwise steps are passes over arrays bigger than the cache. One C call each way (native/layer.c) does the
same arithmetic in a few passes (benchmarks/README.md has the figures).

`forward` is the one place that decides: MoELayer.forward calls it and runs route_and_mix when it returns None.
It applies to the routers whose decision is "softmax, then top-k" (softmax_topk, switch) with position priority
or no capacity, float32 routing, on a CPU with float32/float64 contiguous inputs, k <= MAX_K and experts small
enough for the C matmul (EXPERT_WEIGHTS_LIMIT); and only where the kernels built (a C compiler, and
MOE_PLAYGROUND_NATIVE not 0). Everything else, GPUs included, runs the readable layer: torch library calls.
tests/moe_core/test_accelerator.py holds the two to the same values and gradients for every config it accepts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from moe_core.accelerator.fused_layer import FusedMoE
from moe_core.accelerator.kernels import for_tensors
from moe_core.layer.capacity import expert_capacity
from moe_core.layer.routing_info import RoutingInfo

if TYPE_CHECKING:
    from moe_core.layer.moe_layer import MoELayer

MAX_K = 8  # the C top-k is k passes over E: fine for the k people use, not for k = E = 256
EXPERT_WEIGHTS_LIMIT = 1 << 18  # d * 2h up to which a C matmul runs the experts: a 1 MB float32 W_in[e] stays in
# L2; beyond it the readable layer's MKL matmuls are the faster ones


def softmax_topk_form(layer: MoELayer) -> tuple[int, bool] | None:
    """(k, renormalize) if this layer routes by softmax then top-k with a rule the C layer implements, else None."""
    cfg = layer.config
    if cfg.router_dtype != "float32" or (cfg.capacity_factor is not None and cfg.overflow_policy != "position"):
        return None
    if cfg.router == "softmax_topk":
        return cfg.top_k, cfg.normalize_topk
    if cfg.router == "switch":
        return 1, False
    return None


def forward(layer: MoELayer, x: torch.Tensor, noise: torch.Tensor | None) -> tuple[torch.Tensor, RoutingInfo] | None:
    """layer.route_and_mix(x, noise=noise) as one C call each way, or None where the accelerator does not apply."""
    form = softmax_topk_form(layer)
    if form is None or x.dim() != 2 or x.shape[0] == 0 or form[0] > MAX_K:
        return None
    w_router, w_in, w_out = layer.router.weight, layer.experts.w_in, layer.experts.w_out
    if w_in.shape[1] * w_in.shape[2] > EXPERT_WEIGHTS_LIMIT or for_tensors(x, w_router, w_in, w_out) is None:
        return None
    xr = layer.router.jittered(x, noise)  # (T, d): x itself unless router jitter is on in training
    if xr is not x and for_tensors(x, xr) is None:  # a caller's noise of another dtype or layout
        return None
    k, normalize = form
    cfg, T = layer.config, x.shape[0]
    capacity = expert_capacity(T, cfg.n_experts, k, cfg.capacity_factor)
    y, load_balance, z, aux, logits, probs, index, combine, dropped, counts, kept_counts = FusedMoE.apply(
        x, xr, w_router, w_in, w_out, k, normalize, capacity, k == 1 and normalize, cfg.aux_loss_coef,
        cfg.z_loss_coef, cfg.z_loss_coef > 0, for_tensors(x))
    info = RoutingInfo(
        expert_index=index, combine_weights=combine, router_probs=probs, router_logits=logits, dropped=dropped,
        selected=torch.ones_like(dropped), tokens_per_expert=counts, kept_per_expert=kept_counts, capacity=capacity,
        losses={"load_balance": load_balance, "z": z}, aux_loss=aux,
    )
    return y, info
