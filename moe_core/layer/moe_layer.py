"""MoELayer: route each token to a few SwiGLU experts, run them, and mix their outputs.

    y_t = sum over t's kept slots j of  g_tj * E_{e_tj}(x_t)        (+ shared experts, DeepSeekMoE)
                                                                     (gated by sigmoid(x_t W_sg) in Qwen2-MoE)

in the shape of Mixtral's sparse MoE block (Jiang et al. 2024, arXiv:2401.04088), with GShard's expert capacity
(Lepikhin et al. 2020, arXiv:2006.16668):

    1. router     scores every expert for every token and picks k: expert_index (T, k), gates (T, k)
    2. capacity   each expert takes at most C = ceil(capacity_factor * k * T / E) slots; the rest are dropped
    3. gather     the kept (token, slot) rows of x, grouped by expert
    4. experts    each expert's SwiGLU runs on its block of rows
    5. scatter    each output row times its gate, added back into its token's row of y

The layer returns only the feed-forward output; the residual connection belongs to the block around it, so a
token whose every slot was dropped leaves the block unchanged (y = 0), as in Switch and GShard.

Everything here is plain torch, differentiated by autograd. `accelerator.forward` may replace the whole of
route_and_mix with one C call each way, for the configurations it supports; it gives the same results
(tests/moe_core/test_accelerator.py holds the two to the same values and gradients).
"""

from __future__ import annotations

import torch
from torch import nn

import moe_core.accelerator as accelerator
from moe_core.layer.capacity import SlotAssignment, assign_slots, expert_capacity
from moe_core.layer.config import EVERY_EXPERT_ROUTERS, LIVE_FIELDS, MoEConfig
from moe_core.layer.experts import SwiGLU, SwiGLUExperts
from moe_core.layer.routers import build_router
from moe_core.layer.routers.base import RouterOutput
from moe_core.layer.routing_info import RoutingInfo


class MoELayer(nn.Module):
    """A Mixture-of-Experts feed-forward layer. x (T, d) or (B, S, d) -> (y of x's shape, RoutingInfo).

    token_ids (same leading shape as x): what the hash router hashes (character ids, grid cells).
    noise: the router's random draw, for tests; normally None and sampled in training.
    """

    def __init__(self, config: MoEConfig):
        super().__init__()
        self.config = config
        self.router = build_router(config)
        self.experts = SwiGLUExperts(config.n_experts, config.d_model, config.expert_hidden)
        hidden_shared = config.n_shared_experts * config.expert_hidden
        # n shared SwiGLU experts summed = one SwiGLU with n times the hidden width
        self.shared = SwiGLU(config.d_model, hidden_shared) if hidden_shared else None
        # Qwen2-MoE scales the shared experts' output per token by sigmoid(x W_sg), W_sg (1, d)
        self.shared_gate = nn.Linear(config.d_model, 1, bias=False) if config.shared_expert_gate else None

    def forward(
        self, x: torch.Tensor, token_ids: torch.Tensor | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, RoutingInfo]:
        dtype = self.experts.w_in.dtype
        if x.dtype != dtype:  # say so before torch's "expected m1 and m2 to have the same dtype", deep in a matmul
            raise ValueError(f"input dtype {x.dtype} does not match the layer's parameters ({dtype}): cast the input "
                             f"with x.to({dtype}) or the layer with layer.to({x.dtype})")
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (T, d)
        accelerated = accelerator.forward(self, x, noise)  # None where it does not apply
        y, info = accelerated if accelerated is not None else self.route_and_mix(x, token_ids, noise)
        if self.shared is not None:  # DeepSeekMoE's shared experts see every token
            shared = self.shared(x)  # (T, d)
            if self.shared_gate is not None:
                shared = torch.sigmoid(self.shared_gate(x)) * shared  # (T, 1) * (T, d)
            y = y + shared
        return y.reshape(shape), info

    def route_and_mix(self, x: torch.Tensor, token_ids: torch.Tensor | None, noise: torch.Tensor | None
                      ) -> tuple[torch.Tensor, RoutingInfo]:
        """Steps 1-5 of the module docstring, for every router, device and dtype. x (T, d) -> y (T, d)."""
        cfg = self.config
        T, E = x.shape[0], cfg.n_experts
        # 1. router: which experts, with which weights
        route = self.router(x, token_ids, noise)  # expert_index, gates (T, K)
        if route.slot_mixing is not None:  # Soft MoE: the experts see mixtures of tokens, not tokens
            return self.soft_mix(x, route)
        K = route.expert_index.shape[1]
        # 2. capacity: an expert keeps its first C slots (by position, or by router probability); hash, dense and
        # expert choice have no capacity to apply (expert choice filled exactly C slots per expert itself)
        capacity = expert_capacity(T, E, K, cfg.capacity_factor) if route.uses_capacity else route.capacity
        priority = route.priority if cfg.overflow_policy == "probability" else None
        slots = assign_slots(route.expert_index, E, capacity if route.uses_capacity else None, route.selected,
                             priority)
        # 3. gather the kept pairs' token rows, grouped by expert
        x_sorted = x[slots.token_order]  # (N, d)
        # 4. experts: each expert's SwiGLU on its block
        y_sorted = self.experts(x_sorted, slots.kept_per_expert)  # (N, d)
        # 5. weighted scatter: gate times output, summed into each token's row
        gates = route.gates.t().reshape(-1)[slots.kept_pairs]  # (N,): pair ids are slot-major, like gates.t()
        y = torch.zeros_like(x).index_add(0, slots.token_order, y_sorted * gates.to(x.dtype)[:, None])  # (T, d)
        return y, self.routing_info(x, route, slots, capacity)

    def soft_mix(self, x: torch.Tensor, route: RouterOutput) -> tuple[torch.Tensor, RoutingInfo]:
        """Soft MoE (Puigcerver et al. 2023): each expert runs on p slots, a slot being a weighted average of all
        tokens, and each token's output is a weighted average of all slots' outputs. Nothing is dropped."""
        E, p = self.config.n_experts, self.config.slots_per_expert
        dispatch, combine = route.slot_mixing  # (T, S) each, S = E * p
        slots_in = dispatch.t() @ x.to(dispatch.dtype)  # (S, d)
        slots_out = self.experts.forward_all(slots_in.to(x.dtype).view(E, p, -1)).reshape(E * p, -1)  # (S, d)
        y = (combine @ slots_out.to(combine.dtype)).to(x.dtype)  # (T, d)
        every_slot = torch.full((E,), p, dtype=torch.long, device=x.device)  # (E,)
        kept = torch.ones_like(route.expert_index, dtype=torch.bool)  # (T, E)
        slots = SlotAssignment(kept=kept, tokens_per_expert=every_slot, kept_per_expert=every_slot,
                               kept_pairs=kept.new_empty(0, dtype=torch.long),
                               token_order=kept.new_empty(0, dtype=torch.long))
        return y, self.routing_info(x, route, slots, p)

    def routing_info(self, x: torch.Tensor, route: RouterOutput, slots: SlotAssignment, capacity: int | None
                     ) -> RoutingInfo:
        selected = route.selected if route.selected is not None else torch.ones_like(slots.kept)
        logits = route.logits.detach()
        return RoutingInfo(
            expert_index=route.expert_index.detach(),
            combine_weights=(route.gates * slots.kept).detach(),
            router_probs=route.probs.detach(),
            router_logits=logits.float() if logits.dtype == torch.bfloat16 else logits,
            dropped=selected & ~slots.kept,
            selected=selected,
            tokens_per_expert=slots.tokens_per_expert,
            kept_per_expert=slots.kept_per_expert,
            capacity=capacity,
            losses=route.losses,
            aux_loss=self.weighted_aux_loss(route.losses, x),
        )

    def weighted_aux_loss(self, losses: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """aux_loss_coef * (load_balance, or importance + load for noisy_topk) + z_loss_coef * z."""
        cfg = self.config
        total = torch.zeros((), device=x.device)
        if "load_balance" in losses:
            total = total + cfg.aux_loss_coef * losses["load_balance"]
        if "importance" in losses:
            total = total + cfg.aux_loss_coef * (losses["importance"] + losses["load"])
        if "z" in losses:
            total = total + cfg.z_loss_coef * losses["z"]
        return total

    def update_router_bias(self) -> None:
        """Apply the auxiliary-loss-free bias step (sigmoid_bias); a no-op for other routers."""
        self.router.update_bias()

    def set_hyperparameters(self, **changes) -> None:
        """Change fields that change no tensor shape (LIVE_FIELDS) without rebuilding the layer."""
        frozen = sorted(set(changes) - LIVE_FIELDS)
        if frozen:
            raise ValueError(
                f"{frozen} change the layer's shapes or router and need a new MoELayer; "
                f"fields that can change live are {sorted(LIVE_FIELDS)}"
            )
        self.config = self.config.replace(**changes)
        self.router.config = self.config


def dense_equivalent_hidden(config: MoEConfig) -> int:
    """Hidden width of the dense SwiGLU with as many active expert parameters as one token uses here."""
    active = config.n_experts if config.router in EVERY_EXPERT_ROUTERS else config.top_k
    return active * config.expert_hidden
