"""Noisy top-k gating (Shazeer et al. 2017, "Outrageously Large Neural Networks", arXiv:1701.06538).

    H = x W_g + N(0, 1) * (softplus(x W_noise) + 1e-2)     noise in training only
    w = softmax over the k largest H (zero elsewhere)       = Softmax(KeepTopK(H, k))
    importance_i = sum_x w_i(x);  load_i = sum_x P(x, i)
    P(x, i) = Phi((clean_i - threshold) / std_i): the chance that i stays in the top k if only its own
              noise were re-drawn; threshold = the k-th largest other noisy logit
    losses: cv_squared(importance), cv_squared(load)      (population variance, as tensor2tensor)

Follows tensor2tensor's noisy_top_k_gating: W_g and W_noise start at zero, so routing starts random.
The k weights always sum to 1 by construction; normalize_topk is ignored. Without noise (eval, or k = E)
the load is the plain count of selected slots, which has no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moe_core.layer.metrics import cv_squared, z_loss
from moe_core.layer.routers.base import LinearRouter, RouterOutput, stable_topk, standard_normal

NOISE_EPSILON = 1e-2


class NoisyTopKRouter(LinearRouter):
    def __init__(self, config):
        super().__init__(config, zero_init=True)
        self.noise_weight = nn.Parameter(torch.zeros(config.n_experts, config.d_model))  # (E, d)

    def forward(self, x, token_ids=None, noise=None) -> RouterOutput:
        cfg = self.config
        T, E, k = x.shape[0], cfg.n_experts, cfg.top_k
        clean = self.linear(x)  # (T, E)
        noisy_training = self.training and k < E
        if self.training:
            std = F.softplus(x.to(clean.dtype) @ self.noise_weight.to(clean.dtype).t()) + NOISE_EPSILON  # (T, E)
            draw = standard_normal(clean, self.generator) if noise is None else noise
            logits = clean + draw * std  # (T, E)
        else:
            logits = clean
        top_vals, top_idx = stable_topk(logits, min(k + 1, E))  # (T, k+1)
        index = top_idx[:, :k]  # (T, k)
        gates = top_vals[:, :k].softmax(dim=-1)  # (T, k)
        dense_gates = torch.zeros(T, E, dtype=gates.dtype, device=x.device).scatter(1, index, gates)
        importance = dense_gates.sum(dim=0)  # (E,)
        if noisy_training:
            load = self._prob_in_top_k(clean, logits, std, top_vals).sum(dim=0)  # (E,)
        else:
            load = (dense_gates > 0).sum(dim=0).float()  # (E,) counts, no gradient
        return RouterOutput(
            logits=logits,
            probs=logits.softmax(dim=-1),
            expert_index=index,
            gates=gates,
            priority=gates.detach(),
            losses={"importance": cv_squared(importance), "load": cv_squared(load),
                    "z": z_loss(logits if cfg.z_loss_coef > 0 else logits.detach())},
        )

    def _prob_in_top_k(self, clean, noisy, std, top_vals) -> torch.Tensor:
        """(T, E) P(expert i in the top k | everyone else's noise fixed), tensor2tensor's _prob_in_top_k."""
        k = self.config.top_k
        threshold_if_in = top_vals[:, k : k + 1]  # (T, 1): the (k+1)-th largest noisy logit
        threshold_if_out = top_vals[:, k - 1 : k]  # (T, 1): the k-th largest
        is_in = noisy > threshold_if_in  # (T, E)
        normal = torch.distributions.Normal(0.0, 1.0)
        prob_if_in = normal.cdf((clean - threshold_if_in) / std)
        prob_if_out = normal.cdf((clean - threshold_if_out) / std)
        return torch.where(is_in, prob_if_in, prob_if_out)
