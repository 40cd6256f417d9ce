"""Token-choice softmax top-k routing (GShard, Lepikhin et al. 2020; Mixtral, Jiang et al. 2024; Qwen-MoE).

    p = softmax(x W_r)                      (T, E)
    w, i = top-k(p)                         (T, k)
    w = w / sum(w)   if normalize_topk      (Mixtral; Qwen's norm_topk_prob=True)
"""

from __future__ import annotations

import torch

from moe_core.layer.routers.base import LinearRouter, RouterOutput, softmax_topk


class SoftmaxTopKRouter(LinearRouter):
    def forward(self, x, token_ids=None, noise=None) -> RouterOutput:
        cfg = self.config
        logits = self.linear(self.jittered(x, noise))  # (T, E)
        r = softmax_topk(logits, cfg.top_k, cfg.normalize_topk, cfg.z_loss_coef)
        by_prob = cfg.overflow_policy == "probability"
        return RouterOutput(
            logits=logits,
            probs=r.probs,
            expert_index=r.index,
            gates=r.gates,
            priority=torch.gather(r.probs, 1, r.index).detach() if by_prob else None,
            losses=r.losses,
        )
