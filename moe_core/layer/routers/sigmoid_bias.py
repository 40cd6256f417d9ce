"""DeepSeek-V3 routing (arXiv:2412.19437) with auxiliary-loss-free balancing (Wang et al. 2024,
arXiv:2408.15664).

    s = sigmoid(x W_r)                            (T, E) independent per-expert scores
    i = top-k(s + b)                              the bias b is used ONLY to choose experts
        (group-limited when n_group > 1, V3 §2.1.2 "node-limited routing": the E experts form n_group groups
        of E / n_group; a group's score is the sum of its two largest s + b; only the experts of the
        topk_group best groups may be chosen. V3 ships n_group = 8, topk_group = 4; transformers'
        DeepseekV3TopkRouter computes exactly this.)
    w = s_i / sum over the k of s      if normalize_topk and k > 1 (V3 always does this for sigmoid)
    w = s_i                            if normalize_topk and k = 1 (renormalizing would give w = 1 and
                                       leave the router without a gradient; Megatron does the same)
    w = s'_i = s_i / sum over all E    if not normalize_topk (like un-renormalized softmax weights;
                                       the raw sigmoids of k experts could sum to k)
    weights always come from the UNBIASED scores, then times routed_scaling_factor (V3: 2.5)
    after each optimizer step:  b += u * sign(mean(c) - c)     c = tokens per expert over that step

b is a buffer: it gets no gradient. Counts are accumulated over every training forward of a step
(grad enabled) and applied by update_bias(), which the trainer calls once per optimizer step.
The optional balancing loss (aux_loss_coef) uses the sum-normalized scores s' = s / sum(s), like V3's
sequence-wise loss; router_probs shows s'.

With normalize_topk, k > 1 (as V3 ships: norm_topk_prob = True, k = 8) this is transformers' DeepseekV3MoE to
float64 rounding (tests/moe_core/test_hf_families.py). Its other two forms differ on purpose: at k = 1 it gives
w = 1 (no router gradient), and without normalization the raw s_i.
"""

from __future__ import annotations

import torch

from moe_core.layer.metrics import z_loss
from moe_core.layer.routers.base import LinearRouter, RouterOutput, balance_losses, stable_topk


class SigmoidBiasRouter(LinearRouter):
    def __init__(self, config):
        super().__init__(config)
        self.register_buffer("bias", torch.zeros(config.n_experts))  # (E,) float32, no gradient
        self.register_buffer("pending_counts", torch.zeros(config.n_experts))  # (E,) since last update

    def forward(self, x, token_ids=None, noise=None) -> RouterOutput:
        cfg = self.config
        logits = self.linear(self.jittered(x, noise))  # (T, E)
        scores = torch.sigmoid(logits)  # (T, E)
        index = stable_topk(self.limit_to_groups(scores.detach() + self.bias), cfg.top_k)[1]  # (T, k)
        probs = scores / scores.sum(dim=-1, keepdim=True)  # (T, E) s'
        if not cfg.normalize_topk:
            gates = torch.gather(probs, 1, index)  # (T, k)
        else:
            gates = torch.gather(scores, 1, index)  # (T, k)
            if cfg.top_k > 1:
                gates = gates / gates.sum(dim=-1, keepdim=True).clamp_min(1e-20)
        gates = gates * cfg.routed_scaling_factor
        z = z_loss(logits if cfg.z_loss_coef > 0 else logits.detach())  # 0, not a NaN mean, for no tokens
        losses = balance_losses(z, probs, index, cfg.n_experts)
        if self.training and torch.is_grad_enabled():
            self.pending_counts += torch.bincount(index.reshape(-1), minlength=cfg.n_experts)  # (E,)
        return RouterOutput(
            logits=logits,
            probs=probs,
            expert_index=index,
            gates=gates,
            priority=torch.gather(scores, 1, index).detach(),
            losses=losses,
        )

    def limit_to_groups(self, biased: torch.Tensor) -> torch.Tensor:
        """biased (T, E) with -inf outside each token's topk_group best groups (ties to the lower group)."""
        cfg = self.config
        if cfg.n_group == 1:
            return biased
        T, G = biased.shape[0], cfg.n_group
        group_scores = stable_topk(biased.view(T, G, -1), 2)[0].sum(dim=-1)  # (T, G): two best per group
        best_groups = stable_topk(group_scores, cfg.topk_group)[1]  # (T, topk_group)
        allowed = torch.zeros(T, G, dtype=torch.bool, device=biased.device).scatter(1, best_groups, True)  # (T, G)
        allowed = allowed.repeat_interleave(cfg.n_experts // G, dim=1)  # (T, E): group g = experts g*E/G ...
        return biased.masked_fill(~allowed, float("-inf"))

    @torch.no_grad()
    def update_bias(self) -> None:
        """b += u * sign(mean(c) - c) from the counts since the last call; then reset the counts."""
        c = self.pending_counts
        if c.sum() > 0:
            self.bias += self.config.bias_update_rate * torch.sign(c.mean() - c)
        c.zero_()
