"""RoutingInfo: what one forward pass of MoELayer decided, for the metrics, the views and the losses."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class RoutingInfo:
    """Plot-facing tensors are detached; `losses` and `aux_loss` keep their gradient."""

    expert_index: torch.Tensor  # (T, K) long: expert of each slot (K = k; E for expert_choice/soft/dense)
    combine_weights: torch.Tensor  # (T, K) weight applied to each slot, 0 where dropped or not selected
    router_probs: torch.Tensor  # (T, E) the router's distribution over experts
    router_logits: torch.Tensor  # (T, E)
    dropped: torch.Tensor  # (T, K) bool: selected but over capacity
    selected: torch.Tensor  # (T, K) bool: a real assignment (all True except for expert_choice)
    tokens_per_expert: torch.Tensor  # (E,) long: selected slots per expert, before drops
    kept_per_expert: torch.Tensor  # (E,) long: after drops
    capacity: int | None  # C, or None when nothing limits an expert
    losses: dict[str, torch.Tensor]  # differentiable: "load_balance", "z", "importance", "load"
    aux_loss: torch.Tensor  # differentiable: the weighted sum the trainer adds to the task loss

    @property
    def n_tokens(self) -> int:
        return self.router_probs.shape[0]

    @property
    def n_experts(self) -> int:
        return self.router_probs.shape[1]
