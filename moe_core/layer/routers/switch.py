"""Switch routing (Fedus, Zoph & Shazeer 2021, arXiv:2101.03961): top-1, the raw probability as the weight.

    x_r = x * U(1 - eps, 1 + eps)   in training, on the router's own copy (eps = router_noise; Switch: 1e-2)
    p = softmax(x_r W_r);  i* = argmax p;  y = p_i* * E_i*(x)

The weight is NOT renormalized (it would always be 1 and the router would get no gradient), so
normalize_topk is ignored here.
"""

from __future__ import annotations

from moe_core.layer.routers.base import LinearRouter, RouterOutput, softmax_topk


class SwitchRouter(LinearRouter):
    def forward(self, x, token_ids=None, noise=None) -> RouterOutput:
        logits = self.linear(self.jittered(x, noise))  # (T, E)
        r = softmax_topk(logits, 1, False, self.config.z_loss_coef)  # gates (T, 1): the top probability
        return RouterOutput(
            logits=logits,
            probs=r.probs,
            expert_index=r.index,
            gates=r.gates,
            priority=r.gates.detach(),
            losses=r.losses,
        )
