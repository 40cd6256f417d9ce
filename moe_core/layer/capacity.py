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
    """Where every (token, slot) pair lands, and the kept pairs in expert order (ready for dispatch).

    Pairs are numbered slot-major, n = j*T + t (slot j of token t), which is the GShard priority order.
    """

    kept: torch.Tensor  # (T, K) bool: selected and position < C
    tokens_per_expert: torch.Tensor  # (E,) long: selected slots per expert, before drops
    kept_per_expert: torch.Tensor  # (E,) long
    kept_pairs: torch.Tensor  # (N_kept,) long: pair ids n of the kept pairs, grouped by expert
    token_order: torch.Tensor  # (N_kept,) long: token of each kept pair (= kept_pairs mod T)
    pair_order: torch.Tensor  # (T*K,) every pair id grouped by expert, by priority within an expert
    sorted_experts: torch.Tensor  # (T*K,) the expert of each pair in pair_order (E for unselected)
    kept_gates: torch.Tensor | None = None  # (N_kept,) the gate of each kept pair, when the sort came with them

    @property
    def slot_order(self) -> torch.Tensor:
        """(N_kept,) which of its token's K slots each kept pair is."""
        return self.kept_pairs // self.kept.shape[0]

    @property
    def position(self) -> torch.Tensor:
        """(T, K) long: each pair's position in its expert's queue under the priority order (0 = first)."""
        T, K = self.kept.shape
        counts = torch.bincount(self.sorted_experts, minlength=self.tokens_per_expert.shape[0] + 1)
        starts = torch.cumsum(counts, 0) - counts
        pos_sorted = torch.arange(T * K, device=self.kept.device) - starts[self.sorted_experts]
        flat = torch.empty_like(pos_sorted)
        flat[self.pair_order] = pos_sorted
        return flat.view(K, T).t()


def assign_slots(
    expert_index: torch.Tensor,  # (T, K) long
    n_experts: int,
    capacity: int | None,
    selected: torch.Tensor | None = None,  # (T, K) bool; None = every slot is a real choice
    priority: torch.Tensor | None = None,  # (T, K) float: higher keeps first; None = position order
    counts: torch.Tensor | None = None,  # (E,) bincount of expert_index, if the caller has it already
    presorted: tuple[torch.Tensor, ...] | None = None,  # (pair_order, token_order, sorted_experts, gates) of
    # the stable sort below, if the router's C kernel did it already (used for dropless token choice only)
) -> SlotAssignment:
    """Vectorized capacity assignment: one stable sort of the T*K pairs by expert, no loop over tokens."""
    T, K = expert_index.shape
    device = expert_index.device
    if selected is None and priority is None and capacity is None:  # dropless token choice: the fast path
        if presorted is not None:
            pair_order, token_order, sorted_experts, kept_gates = presorted
        else:
            sorted_experts, pair_order = torch.sort(expert_index.t().reshape(-1), stable=True)  # slot-major
            token_order, kept_gates = (pair_order % T if K > 1 else pair_order), None
        tokens = counts if counts is not None else torch.bincount(expert_index.reshape(-1), minlength=n_experts)
        return SlotAssignment(
            kept=torch.ones(T, K, dtype=torch.bool, device=device), tokens_per_expert=tokens,
            kept_per_expert=tokens, kept_pairs=pair_order, token_order=token_order,
            pair_order=pair_order, sorted_experts=sorted_experts, kept_gates=kept_gates,
        )
    experts_flat = expert_index.t().reshape(-1)  # (K*T,) slot-major: all 1st choices, then all 2nd ...
    if selected is not None:  # unselected pairs go to a virtual expert E, sorted last and never counted
        sel_flat = selected.t().reshape(-1)  # (K*T,)
        experts_flat = torch.where(sel_flat, experts_flat, torch.full_like(experts_flat, n_experts))
    if priority is None:
        sorted_experts, pair_order = torch.sort(experts_flat, stable=True)
    else:
        order = torch.sort(-priority.t().reshape(-1).detach(), stable=True).indices  # (K*T,)
        sorted_experts, perm = torch.sort(experts_flat[order], stable=True)
        pair_order = order[perm]
    all_counts = torch.bincount(experts_flat, minlength=n_experts + 1)  # (E+1,)
    tokens_per_expert = all_counts[:n_experts]
    keep_sorted = sorted_experts < n_experts
    if capacity is not None:
        starts = torch.cumsum(all_counts, 0) - all_counts
        keep_sorted &= torch.arange(K * T, device=device) - starts[sorted_experts] < capacity
    kept_pairs = pair_order[keep_sorted]  # (N_kept,) still grouped by expert
    kept_flat = torch.empty(K * T, dtype=torch.bool, device=device)
    kept_flat[pair_order] = keep_sorted
    kept_per_expert = tokens_per_expert if capacity is None else tokens_per_expert.clamp(max=capacity)
    return SlotAssignment(
        kept=kept_flat.view(K, T).t(), tokens_per_expert=tokens_per_expert, kept_per_expert=kept_per_expert,
        kept_pairs=kept_pairs, token_order=kept_pairs % T, pair_order=pair_order, sorted_experts=sorted_experts,
    )
