"""Token-choice softmax top-k routing (GShard, Lepikhin et al. 2020; Mixtral, Jiang et al. 2024; Qwen-MoE).

    p = softmax(x W_r)                      (T, E)
    w, i = top-k(p)                         (T, k)
    w = w / sum(w)   if normalize_topk      (Mixtral; Qwen's norm_topk_prob=True)
"""

from __future__ import annotations

import torch

from moe_core.routers.base import Router, RouterOutput, balance_losses, softmax_with_z, topk_gates


class SoftmaxTopKRouter(Router):
    def forward(self, x, token_ids=None, noise=None) -> RouterOutput:
        cfg = self.config
        logits = self.linear(self.jittered(x, noise))  # (T, E)
        probs, z = softmax_with_z(logits, cfg.z_loss_coef)  # (T, E)
        gates, index = topk_gates(probs, cfg.top_k, cfg.normalize_topk)  # (T, k) each
        losses, counts = balance_losses(z, probs, index, cfg.n_experts)
        by_prob = cfg.overflow_policy == "probability"
        return RouterOutput(
            logits=logits,
            probs=probs,
            expert_index=index,
            gates=gates,
            priority=torch.gather(probs, 1, index).detach() if by_prob else None,
            losses=losses,
            counts=counts,
        )
