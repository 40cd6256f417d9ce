"""The dense mixture of Jacobs, Jordan, Nowlan & Hinton (1991), "Adaptive Mixtures of Local Experts".

    p = softmax(x W_r)           (T, E)
    y = sum_e p_e * E_e(x)       every expert runs on every token: no sparsity, no capacity

top_k is ignored. softmax_topk with k = E and normalize_topk computes the same function.
"""

from __future__ import annotations

import torch

from moe_core.routers.base import Router, RouterOutput, softmax_with_z


class DenseRouter(Router):
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
