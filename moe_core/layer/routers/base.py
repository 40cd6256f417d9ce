"""What every router returns, and the pieces routers share (the router linear map, input jitter, top-k)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from moe_core.layer.config import MoEConfig
from moe_core.layer.metrics import load_balancing_loss


def router_dtype(x: torch.Tensor) -> torch.dtype:
    """Routers compute in float32 even when the model runs in half precision; float64 stays float64."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


@dataclass
class RouterOutput:
    """A routing decision for T tokens with K slots each (K = k for token choice, E otherwise)."""

    logits: torch.Tensor  # (T, E) router logits, float32, after any noise (the z-loss reads these)
    probs: torch.Tensor  # (T, E) the distribution a learner should see for each token
    expert_index: torch.Tensor  # (T, K) long: which expert each slot goes to
    gates: torch.Tensor  # (T, K) combine weight of each slot before capacity drops (differentiable)
    selected: torch.Tensor | None = None  # (T, K) bool: slot is a real assignment; None = all are
    priority: torch.Tensor | None = None  # (T, K) score for overflow_policy="probability"
    uses_capacity: bool = True  # whether the layer's capacity factor limits this router
    capacity: int | None = None  # slots per expert the router fixed itself (expert_choice, soft)
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # auxiliary terms (see softmax_with_z)
    slot_mixing: tuple[torch.Tensor, torch.Tensor] | None = None  # Soft MoE only: (dispatch, combine), each
    # (T, S): experts see mixtures of tokens instead of tokens (routers/soft.py)


class Router(nn.Module):
    """Base class of every router: forward(x (T, d), token_ids (T,) | None, noise | None) -> RouterOutput.

    `noise` is the random draw the router would otherwise sample itself in training, so that tests can hand the
    same draw to a slow reference; `generator` is where it is drawn from (None: torch's global RNG).
    """

    generator: torch.Generator | None = None

    def __init__(self, config: MoEConfig):
        super().__init__()
        self.config = config

    def update_bias(self) -> None:
        """Called once per optimizer step; only the auxiliary-loss-free router (sigmoid_bias) has a bias to move."""


class LinearRouter(Router):
    """A router that scores experts with a learned linear map W_r (E, d), in float32 (selective precision, as in
    Switch and Mesh-TF), the ROUTER's copy of x optionally jittered (Switch)."""

    def __init__(self, config: MoEConfig, zero_init: bool = False):
        super().__init__(config)
        self.weight = nn.Parameter(torch.empty(config.n_experts, config.d_model))  # (E, d)
        if zero_init:
            nn.init.zeros_(self.weight)
        else:  # small init: routing starts near uniform but not tied (flaxformer uses normal(0.02))
            nn.init.normal_(self.weight, std=0.02)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """x W_r^T in float32 (float64 for float64 input); in bfloat16 when config.router_dtype says so: the logits
        a mixed-precision model computes without Switch's selective precision (Fedus et al. 2021, §2.4)."""
        dtype = torch.bfloat16 if self.config.router_dtype == "bfloat16" else router_dtype(x)
        return x.to(dtype) @ self.weight.to(dtype).t()  # (T, E)

    def jittered(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """Switch's router jitter: the ROUTER's copy of x times U(1-eps, 1+eps), in training only.

        The experts never see the jittered copy (HF Mixtral jitters in place, which also perturbs the
        experts; Mesh-TF, flaxformer and DeepSpeed jitter only the router input — we follow them).
        `noise`, if given, is the U(1-eps, 1+eps) draw itself, shape (T, d).
        """
        eps = self.config.router_noise
        if not self.training or eps == 0.0:
            return x
        if noise is None:
            noise = torch.empty_like(x, dtype=router_dtype(x)).uniform_(1.0 - eps, 1.0 + eps, generator=self.generator)
        return x.to(router_dtype(x)) * noise


def standard_normal(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, dtype=like.dtype, device=like.device, generator=generator)


def stable_topk(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest along the last dim, largest first, ties to the lower index (as the per-token reference
    chooses). torch.topk leaves the order of ties unspecified, so this is a stable descending sort, cut at k."""
    values, index = torch.sort(values, dim=-1, descending=True, stable=True)
    return values[..., :k], index[..., :k]


def softmax_with_z(logits: torch.Tensor, z_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(softmax(logits), router z-loss) from one logsumexp: p = exp(z - lse), L_z = mean(lse^2) (ST-MoE).

    With z_coef = 0 the z-loss is still reported (the curves show it) but kept out of the autograd graph.
    """
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (T, 1)
    probs = (logits - lse).exp()  # (T, E)
    lse_squared = (lse if z_coef > 0 else lse.detach()).squeeze(-1).square()  # (T,)
    z = lse_squared.sum() / max(logits.shape[0], 1)  # the mean over tokens, but 0 (not NaN) for no tokens
    return probs, z


@dataclass
class SoftmaxTopK:
    """softmax -> top-k -> (renormalize) with the balance and z losses: what softmax_topk and switch share."""

    probs: torch.Tensor  # (T, E)
    gates: torch.Tensor  # (T, k) differentiable
    index: torch.Tensor  # (T, k) long
    losses: dict[str, torch.Tensor]  # "load_balance", "z"


def softmax_topk(logits: torch.Tensor, k: int, normalize: bool, z_coef: float) -> SoftmaxTopK:
    """p = softmax(logits); w, i = top-k(p); w /= sum(w) if normalize. Plus the Switch balance loss and the z-loss.

    softmax -> top-k -> renormalize equals top-k on logits -> softmax over the k (Mixtral's form). bfloat16 logits
    (router_dtype='bfloat16') are rounded as in a router without selective precision, and come back as float32
    tensors holding those bfloat16 values, so that everything downstream (dispatch, metrics, plots) is unchanged.
    """
    probs, z = softmax_with_z(logits, z_coef)  # (T, E)
    gates, index = stable_topk(probs, k)  # (T, k) each
    if normalize and k == 1:  # p / p = 1 exactly, with derivative 0: the task loss cannot train the router (the trap
        gates = 1 + 0 * gates  # of lesson 2.4); written so, the router gets that exact zero, not rounding noise
    elif normalize:
        gates = gates / gates.sum(dim=-1, keepdim=True)  # >= 1/E: the top-1 of a softmax
    losses = balance_losses(z, probs, index, logits.shape[1])
    if logits.dtype == torch.bfloat16:
        probs, gates = probs.float(), gates.float()
        losses = {name: loss.float() for name, loss in losses.items()}
    return SoftmaxTopK(probs, gates, index, losses)


def balance_losses(z: torch.Tensor, probs: torch.Tensor, expert_index: torch.Tensor, n_experts: int
                   ) -> dict[str, torch.Tensor]:
    """The Switch/MegaBlocks load-balancing loss over the top-k slots, and the z-loss."""
    counts = torch.bincount(expert_index.reshape(-1), minlength=n_experts)  # (E,) slots per expert
    return {"load_balance": load_balancing_loss(probs, counts, expert_index.shape[1]), "z": z}
