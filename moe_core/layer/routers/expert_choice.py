"""Expert Choice routing (Zhou et al. 2022, arXiv:2202.09368): each EXPERT picks its top-C tokens.

    p = softmax(x W_r) over experts, per token        (T, E)
    for each expert e: the C tokens with the largest p[:, e]       C = ceil(cf * k * T / E), cf None -> 1
    y_t = sum over the experts that picked t of p[t, e] * E_e(x_t)    (no renormalization)

Every expert is exactly full, so nothing is dropped and no balancing loss is needed; but a token may be
picked by several experts or by none. NON-CAUSAL: whether a token is picked depends on the other tokens
in the batch, including later ones, so it cannot be used in a decoder that generates left to right.
"""

from __future__ import annotations

import torch

from moe_core.layer.capacity import expert_capacity
from moe_core.layer.routers.base import LinearRouter, RouterOutput, softmax_with_z, stable_topk


class ExpertChoiceRouter(LinearRouter):
    def forward(self, x, token_ids=None, noise=None) -> RouterOutput:
        cfg = self.config
        T, E = x.shape[0], cfg.n_experts
        logits = self.linear(self.jittered(x, noise))  # (T, E)
        probs, z = softmax_with_z(logits, self.config.z_loss_coef)  # (T, E)
        capacity = min(T, expert_capacity(T, E, cfg.top_k, cfg.capacity_factor or 1.0))
        picked = stable_topk(probs.t(), capacity)[1]  # (E, C) token ids per expert, ties to the earlier token
        selected = torch.zeros(T, E, dtype=torch.bool, device=x.device)
        selected[picked, torch.arange(E, device=x.device)[:, None]] = True  # (T, E)
        return RouterOutput(
            logits=logits,
            probs=probs,
            expert_index=torch.arange(E, device=x.device).expand(T, E),
            gates=probs * selected,
            selected=selected,
            uses_capacity=False,
            capacity=capacity,
            losses={"z": z},
        )
