"""GShard top-2 gating with random routing (Lepikhin et al. 2020, arXiv:2006.16668, §2.2 and Algorithm 1).

    p = softmax(x W_r)                              (T, E)
    (p1, e1), (p2, e2) = top-2(p)                   ties to the lower index
    g1 = p1 / (p1 + p2);  g2 = p2 / (p1 + p2)       normalized once, before any drop (Algorithm 1)
    u ~ U(0, 1) per token, in training only
    e1: always dispatched;  e2: dispatched only if 2 * g2 > u     so with probability 2 * g2 (<= 1, as g2 <= 1/2)
    y = g1 * E_e1(x) + [e2 dispatched] * g2 * E_e2(x)            no renormalization after a drop
    L_aux = E * sum_e (c_e / T) * m_e    c_e: tokens whose FIRST choice is e; m_e = mean_t p_te

"If the weight for the 2nd expert is very small, we can simply ignore the 2nd expert to conserve the overall
expert capacity" (§2.2, "Random routing"). Capacity C = ceil(cf * 2 * T / E) (GShard's 2N/(G*E) is cf = 1); all
first choices take their slots before any second choice, as in Algorithm 1's two loops. top_k is always 2.

Choices where the sources differ, and ours:
- a 2nd expert that loses the draw takes no slot, as in GShard's Lingvo code (Top2GatingOnLogits), Mesh-TF and
  fairseq, which mask it out before counting positions; Algorithm 1 as printed advances c_e2 either way.
- the draw compares the NORMALIZED g2, as Algorithm 1 and Lingvo (policy 'random': keep if u < g2 / threshold,
  here threshold = 1/2). Mesh-TF keeps with probability min(1, g2 / threshold) for a configurable threshold;
  fairseq's top2gating by default tests 2 * p2 before normalizing, which keeps fewer 2nd experts.
- at eval both experts are kept and nothing is drawn, which Mesh-TF allows (second_policy_eval='all'); Lingvo,
  fairseq and Mesh-TF's default draw at eval too. Here a draw at eval would take numbers from the training
  stream, so a run would depend on how often the app redraws, and a point would route differently each time.
- L_aux is Algorithm 1's (1/E) sum_e (c_e/S) m_e scaled by E^2, as Lingvo and Mesh-TF scale it: 1 at balance.
normalize_topk and router_noise are not used (GShard normalizes always and has no jitter: its randomness is u).
"""

from __future__ import annotations

import torch

from moe_core.layer.metrics import load_balancing_loss
from moe_core.layer.routers.base import LinearRouter, RouterOutput, softmax_with_z, stable_topk


class GShardTop2Router(LinearRouter):
    def forward(self, x, token_ids=None, noise=None) -> RouterOutput:
        """noise: the (T,) uniform draw u; drawn from self.generator in training when None."""
        cfg = self.config
        logits = self.linear(x)  # (T, E)
        probs, z = softmax_with_z(logits, cfg.z_loss_coef)  # (T, E)
        top, index = stable_topk(probs, 2)  # (T, 2): p1 >= p2
        gates = top / top.sum(dim=-1, keepdim=True)  # (T, 2): g1, g2, differentiable
        selected = None  # eval: both experts
        if self.training:
            T = x.shape[0]
            if noise is not None and tuple(noise.shape) != (T,):
                raise ValueError(f"gshard_top2: noise must be the (T,) = ({T},) uniform draw, got shape "
                                 f"{tuple(noise.shape)}")
            u = noise if noise is not None else torch.rand(T, dtype=gates.dtype, device=gates.device,
                                                           generator=self.generator)
            keep_second = 2.0 * gates[:, 1].detach() > u  # (T,)
            selected = torch.stack((torch.ones_like(keep_second), keep_second), dim=1)  # (T, 2)
        first_counts = torch.bincount(index[:, 0], minlength=cfg.n_experts)  # (E,) c_e
        by_prob = cfg.overflow_policy == "probability"
        return RouterOutput(
            logits=logits,
            probs=probs,
            expert_index=index,
            gates=gates,
            selected=selected,
            priority=top.detach() if by_prob else None,
            losses={"load_balance": load_balancing_loss(probs, first_counts, 1), "z": z},
        )
