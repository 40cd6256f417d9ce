"""Soft MoE (Puigcerver, Riquelme, Mustafa & Houlsby 2023, arXiv:2308.00951): experts process SLOTS,
each slot a weighted average of all tokens, and each token a weighted average of all slots.

    logits = scale * normalize(X) normalize(Phi)^T        (T, S)  S = E * p slots, Phi learned (S, d)
    D = softmax over TOKENS (dim 0);  C = softmax over SLOTS (dim 1)
    X~ = D^T X  (S, d);   Y~_e = E_e(X~ of e's p slots);   Y = C Y~   (T, d)

Fully differentiable, nothing is dropped, no balancing loss. NON-CAUSAL: every slot mixes every token of
the batch, so a token's output depends on later tokens. For the views: router_probs[t, e] = the share of
t's combine weight on expert e's slots (rows sum to 1), router_logits = logsumexp over e's slots.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moe_core.layer.routers.base import Router, RouterOutput, router_dtype, standard_normal


class SoftRouter(Router):
    def __init__(self, config):
        super().__init__(config)
        n_slots = config.n_experts * config.slots_per_expert
        self.slots = nn.Parameter(torch.randn(n_slots, config.d_model) / config.d_model**0.5)  # (S, d)
        self.scale = nn.Parameter(torch.ones(()))  # learned temperature, init 1 (vmoe)

    def slot_logits(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        dtype = router_dtype(x)
        slots = F.normalize(self.slots.to(dtype), dim=-1)  # (S, d)
        logits = self.scale.to(dtype) * F.normalize(x.to(dtype), dim=-1) @ slots.t()  # (T, S)
        if self.training and self.config.router_noise > 0:
            draw = standard_normal(logits, self.generator) if noise is None else noise
            logits = logits + self.config.router_noise * draw
        return logits

    def forward(self, x, token_ids=None, noise=None) -> RouterOutput:
        """The slot weights (dispatch, combine) for MoELayer, which runs the experts on the slots."""
        T, E, p = x.shape[0], self.config.n_experts, self.config.slots_per_expert
        logits = self.slot_logits(x, noise)  # (T, S)
        dispatch = logits.softmax(dim=0)  # (T, S): each slot's weights over tokens
        combine = logits.softmax(dim=1)  # (T, S): each token's weights over slots
        per_expert = combine.view(T, E, p).sum(dim=-1)  # (T, E): t's combine weight on e's slots
        return RouterOutput(
            logits=logits.view(T, E, p).logsumexp(dim=-1),
            probs=per_expert,
            expert_index=torch.arange(E, device=x.device).expand(T, E),
            gates=per_expert,
            uses_capacity=False,
            capacity=p,
            slot_mixing=(dispatch, combine),
        )
