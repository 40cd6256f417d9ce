"""Token-choice softmax top-k routing (GShard, Lepikhin et al. 2020; Mixtral, Jiang et al. 2024; Qwen-MoE).

    p = softmax(x W_r)                      (T, E)
    w, i = top-k(p)                         (T, k)
    w = w / sum(w)   if normalize_topk      (Mixtral; Qwen's norm_topk_prob=True)
"""

from __future__ import annotations

import torch

from moe_core.routers.base import Router, RouterOutput, balance_losses, topk_gates


class SoftmaxTopKRouter(Router):
    def forward(self, x, token_ids=None, noise=None) -> RouterOutput:
        cfg = self.config
        logits = self.linear(self.jittered(x, noise))  # (T, E)
        probs = logits.softmax(dim=-1)  # (T, E)
        gates, index = topk_gates(probs, cfg.top_k, cfg.normalize_topk)  # (T, k) each
        return RouterOutput(
            logits=logits,
            probs=probs,
            expert_index=index,
            gates=gates,
            priority=torch.gather(probs, 1, index),
            losses=balance_losses(logits, probs, index, cfg.n_experts),
        )
