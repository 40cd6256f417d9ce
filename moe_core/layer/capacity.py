"""Expert capacity and who gets a slot when an expert overflows.

One convention, used everywhere in this project (the app shows C explicitly):

    C = ceil(capacity_factor * k * T / E), at least 1;   capacity_factor None = dropless (no C).

Implementations disagree here (read in each project's source): Mesh-TF and flaxformer leave
k out and floor or round; DeepSpeed top-k and Megatron use ceil(T*k/E*cf) like us; MegaBlocks floors.
With T=1000, E=8, k=2, cf=1.25 ours gives 313.

Overflow: (token, expert) slots beyond C are dropped. A dropped slot contributes zero and the token keeps
its residual; the surviving weights are NOT renormalized (Mesh-TF and Megatron behave so; fairscale and
DeepSpeed renormalize). Priority decides who keeps a slot:
  - "position": GShard/Mesh-TF order: every token's 1st choice before any 2nd choice, then earlier tokens.
  - "probability": higher router probability first (Megatron's drop_policy="probs"); ties by position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def expert_capacity(n_tokens: int, n_experts: int, top_k: int, capacity_factor: float | None) -> int | None:
    """C = ceil(capacity_factor * top_k * n_tokens / n_experts), at least 1; None when capacity_factor is None."""
    if capacity_factor is None:
        return None
    raw = capacity_factor * top_k * n_tokens / n_experts
    # shave float noise so that e.g. 1.1 * 10 / 11 = 1.0000000000000002 gives 1, not 2
    return max(1, math.ceil(raw - 1e-9 * max(1.0, raw)))


@dataclass
class SlotAssignment:
    """Which (token, slot) pairs keep their slot, and the kept pairs grouped by expert (ready for dispatch).

    Pairs are numbered slot-major, n = j*T + t (slot j of token t), which is the GShard priority order.
    """

    kept: torch.Tensor  # (T, K) bool: selected and within its expert's capacity
    tokens_per_expert: torch.Tensor  # (E,) long: selected slots per expert, before drops
    kept_per_expert: torch.Tensor  # (E,) long: after drops
    kept_pairs: torch.Tensor  # (N,) long: pair ids n of the kept pairs, grouped by expert, by priority within one
    token_order: torch.Tensor  # (N,) long: the token of each kept pair (= kept_pairs mod T)


def assign_slots(
    expert_index: torch.Tensor,  # (T, K) long
    n_experts: int,
    capacity: int | None,
    selected: torch.Tensor | None = None,  # (T, K) bool; None = every slot is a real choice
    priority: torch.Tensor | None = None,  # (T, K) float: higher keeps first; None = position order
) -> SlotAssignment:
    """One stable sort of the T*K pairs by expert (no loop over tokens); each expert keeps its first C pairs."""
    T, K = expert_index.shape
    experts_flat = expert_index.t().reshape(-1)  # (K*T,) slot-major: all 1st choices, then all 2nd ...
    if selected is not None:  # unselected pairs go to a virtual expert E, sorted last and never kept
        experts_flat = torch.where(selected.t().reshape(-1), experts_flat, n_experts)
    if priority is None:  # position order: the pair numbering itself
        sorted_experts, pair_order = torch.sort(experts_flat, stable=True)  # (K*T,) each
    else:  # higher priority first, ties by position
        order = torch.sort(-priority.t().reshape(-1).detach(), stable=True).indices  # (K*T,)
        sorted_experts, perm = torch.sort(experts_flat[order], stable=True)
        pair_order = order[perm]
    all_counts = torch.bincount(experts_flat, minlength=n_experts + 1)  # (E+1,) the last: unselected
    tokens_per_expert = all_counts[:n_experts]  # (E,)
    keep_sorted = sorted_experts < n_experts  # (K*T,)
    if capacity is not None:  # a pair's place in its expert's queue must be < C
        queue_start = torch.cumsum(all_counts, 0) - all_counts  # (E+1,)
        place = torch.arange(K * T, device=expert_index.device) - queue_start[sorted_experts]
        keep_sorted &= place < capacity
    kept_pairs = pair_order[keep_sorted]  # (N,) still grouped by expert
    kept_flat = torch.empty(K * T, dtype=torch.bool, device=expert_index.device)
    kept_flat[pair_order] = keep_sorted
    kept_per_expert = tokens_per_expert if capacity is None else tokens_per_expert.clamp(max=capacity)
    return SlotAssignment(kept=kept_flat.view(K, T).t(), tokens_per_expert=tokens_per_expert,
                          kept_per_expert=kept_per_expert, kept_pairs=kept_pairs, token_order=kept_pairs % T)
