"""Switch routing (Fedus, Zoph & Shazeer 2021, arXiv:2101.03961): top-1, the raw probability as the weight.

    x_r = x * U(1 - eps, 1 + eps)   in training, on the router's own copy (eps = router_noise; Switch: 1e-2)
    p = softmax(x_r W_r);  i* = argmax p;  y = p_i* * E_i*(x)

The weight is NOT renormalized (it would always be 1 and the router would get no gradient), so
normalize_topk is ignored here.
"""

from __future__ import annotations

import torch

from moe_core.routers.base import Router, RouterOutput, balance_losses, softmax_with_z


class SwitchRouter(Router):
    def forward(self, x, token_ids=None, noise=None) -> RouterOutput:
        logits = self.linear(self.jittered(x, noise))  # (T, E)
        probs, z = softmax_with_z(logits, self.config.z_loss_coef)  # (T, E)
        gates, index = torch.max(probs, dim=-1, keepdim=True)  # (T, 1) each
        losses, counts = balance_losses(z, probs, index, self.config.n_experts)
        return RouterOutput(
            logits=logits,
            probs=probs,
            expert_index=index,
            gates=gates,
            priority=gates.detach(),
            losses=losses,
            counts=counts,
        )
