"""A soft (cooperative) dense mixture: the gate of Jacobs, Jordan, Nowlan & Hinton (1991), "Adaptive
Mixtures of Local Experts", trained on the blended output.

    p = softmax(x W_r)           (T, E)
    y = sum_e p_e * E_e(x)       every expert runs on every token: no sparsity, no capacity

The task loss is computed on y, so the experts cooperate on every token. Jacobs et al. trained a
competitive error instead, sum_e p_e * ||d - E_e(x)||^2 (in their experiments its log form,
-log sum_e p_e * exp(-||d - E_e(x)||^2 / 2)), in which each expert tries to produce the whole target d
alone; that is what made their experts local. This router keeps the cooperative error.

top_k is ignored. softmax_topk with k = E and normalize_topk computes the same function.
"""

from __future__ import annotations

import torch

from moe_core.layer.routers.base import LinearRouter, RouterOutput, softmax_with_z


class DenseRouter(LinearRouter):
    def forward(self, x, token_ids=None, noise=None) -> RouterOutput:
        T, E = x.shape[0], self.config.n_experts
        logits = self.linear(self.jittered(x, noise))  # (T, E)
        probs, z = softmax_with_z(logits, self.config.z_loss_coef)  # (T, E)
        return RouterOutput(
            logits=logits,
            probs=probs,
            expert_index=torch.arange(E, device=x.device).expand(T, E),
            gates=probs,
            uses_capacity=False,
            losses={"z": z},
        )
