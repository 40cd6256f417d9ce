"""Metrics for one MoE layer: auxiliary losses, load balance, dropping, entropy, specialization, cost.

Pure functions on torch tensors. Shapes: T tokens, E routed experts, K routing slots per token
(k for token-choice routers, E for expert_choice / soft / dense), L labels.
Losses marked "differentiable" return a 0-dim tensor that keeps the graph; the rest return Python floats
(or a tensor where a table is the result). Sources are named per function (see the routing reference §13).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from moe_core.layer.capacity import expert_capacity
from moe_core.layer.config import EVERY_EXPERT_ROUTERS, MoEConfig

__all__ = [
    "expert_capacity",
    "load_balancing_loss",
    "z_loss",
    "cv_squared",
    "load_cv",
    "max_violation",
    "dropped_fraction",
    "tokens_left_behind",
    "left_behind_count",
    "router_entropy",
    "usage_entropy",
    "expert_label_counts",
    "mutual_information",
    "co_activation",
    "parameter_counts",
    "flops_per_token",
]

TOKEN_CHOICE_ROUTERS = ("softmax_topk", "noisy_topk", "switch", "sigmoid_bias", "hash")


# -- auxiliary losses (differentiable) --------------------------------------------------------------------
def load_balancing_loss(
    router_probs: torch.Tensor, tokens_per_expert: torch.Tensor, top_k: int
) -> torch.Tensor:
    """Switch-style load-balancing loss, normalized so that perfect balance gives 1 for any k.

    L = E / (k·T) · Σ_i count_i · P_i,  P_i = mean_t router_probs[t, i]
    (Switch Transformer, Fedus et al. 2021, arXiv:2101.03961; the top-k normalization of MegaBlocks and
    DeepSeek `MoEGate`). count_i are the routed slots of expert i (Σ count = k·T); they are detached, so the
    gradient flows only through P. With uniform probs the loss is 1 whatever the counts; collapse gives ≈ E.
    """
    T, E = router_probs.shape
    if T == 0:
        return router_probs.sum() * 0.0
    counts = tokens_per_expert.detach().to(router_probs.dtype)  # (E,)
    P = router_probs.mean(dim=0)  # (E,)
    return E / (top_k * T) * (counts * P).sum()


def z_loss(router_logits: torch.Tensor) -> torch.Tensor:
    """Router z-loss: mean_t (logsumexp_i z_ti)² (ST-MoE, Zoph et al. 2022, arXiv:2202.08906).

    Penalizes large router logits. All-zero logits give (ln E)².
    """
    if router_logits.shape[0] == 0:
        return router_logits.sum() * 0.0
    return torch.logsumexp(router_logits, dim=-1).pow(2).mean()


def cv_squared(x: torch.Tensor) -> torch.Tensor:
    """Squared coefficient of variation, var_pop(x) / (mean(x)² + 1e-10) (tensor2tensor `cv_squared`,
    used for Shazeer et al. 2017's importance and load losses, arXiv:1701.06538).

    Population variance (correction=0), as in t2t. 0 for a single element. Differentiable in x.
    """
    x = x if x.is_floating_point() else x.float()  # (E,)
    if x.numel() <= 1:
        return x.sum() * 0.0
    return torch.var(x, correction=0) / (x.mean() ** 2 + 1e-10)


# -- load balance ------------------------------------------------------------------------------------------
def load_summary(load) -> tuple[float, float, float]:
    """(load_cv, max_violation, usage_entropy) of a load vector (E,): a tensor, an array or a plain list.

    Plain Python on E numbers: the trainer records these three every step from values it has already read
    back, where numpy's or torch's per-call overhead cost more than the arithmetic. All three are 0.0 for an
    empty or all-zero load.
    """
    if isinstance(load, torch.Tensor):
        load = load.detach().cpu().reshape(-1).tolist()
    elif not isinstance(load, list):
        load = np.asarray(load, dtype=np.float64).reshape(-1).tolist()
    n = len(load)
    total = sum(load)
    mean = total / n if n else 0.0
    if mean == 0:
        return 0.0, 0.0, 0.0
    cv = math.sqrt(sum((c - mean) ** 2 for c in load) / n) / mean  # population std / mean
    shares = [c / total for c in load]
    entropy = -sum(u * math.log(u) for u in shares if u > 0)  # 0 ln 0 = 0
    return cv, max(load) / mean - 1.0, entropy


def load_cv(tokens_per_expert: torch.Tensor) -> float:
    """Coefficient of variation of the load, std_pop(c) / mean(c) (Shazeer et al. 2017).

    0 at perfect balance, √(E−1) for a top-1 collapse onto one expert; 0.0 when every count is 0.
    """
    return load_summary(tokens_per_expert)[0]


def max_violation(tokens_per_expert: torch.Tensor) -> float:
    """MaxVio = max_i c_i / mean(c) − 1 (Wang et al. 2024, loss-free balancing, arXiv:2408.15664).

    0 at perfect balance, E − 1 for a top-1 collapse; 0.0 when every count is 0.
    """
    return load_summary(tokens_per_expert)[1]


# -- dropping ---------------------------------------------------------------------------------------------
def dropped_fraction(dropped: torch.Tensor, selected: torch.Tensor | None = None) -> float:
    """Dropped slot fraction = dropped selected slots / selected slots = 1 − kept slots / (T·k).

    dropped, selected: (T, K) bool; selected None means every slot was selected. 0.0 with no selected slot.
    """
    if selected is None:
        selected = torch.ones_like(dropped, dtype=torch.bool)
    n_sel = int(selected.sum())
    if n_sel == 0:
        return 0.0
    return int((dropped & selected).sum()) / n_sel


def tokens_left_behind(dropped: torch.Tensor, selected: torch.Tensor | None = None) -> float:
    """Fraction of tokens processed by no expert: 1 − #tokens with ≥ 1 kept slot / T
    (flaxformer `fraction_tokens_left_behind`).

    A slot is kept when it is selected and not dropped. Tokens that had no selected slot at all (possible
    with expert_choice) also count as left behind: they only keep their residual. 0.0 when T = 0.
    """
    T = dropped.shape[0]
    if T == 0:
        return 0.0
    return left_behind_count(dropped, selected) / T


def left_behind_count(dropped: torch.Tensor, selected: torch.Tensor | None = None) -> int:
    """How many tokens kept no slot at all: T − #tokens with ≥ 1 selected, undropped slot.

    With expert choice (Zhou et al. 2022, arXiv:2202.09368) each expert picks its top-C tokens, so a token that
    no expert picked has no selected slot; with token choice and a capacity, a token whose every slot
    overflowed. Either way the MoE layer adds nothing for it: it passes on through the residual only.
    dropped, selected: (T, K) bool; selected None means every slot was selected.
    """
    if selected is None:
        selected = torch.ones_like(dropped, dtype=torch.bool)
    kept_any = (selected & ~dropped).any(dim=-1)  # (T,)
    return int(dropped.shape[0] - kept_any.sum())


# -- entropy ----------------------------------------------------------------------------------------------
def router_entropy(router_probs: torch.Tensor) -> float:
    """Mean per-token routing entropy in nats, mean_t −Σ_i p_ti log(p_ti + 1e-9) (Mesh-TF `entropy` summary).

    Maximum ln E (uniform probs): low means confident, sparse routing. 0.0 when T = 0.
    """
    p = router_probs.detach().double()  # (T, E)
    if p.shape[0] == 0:
        return 0.0
    return float(-(p * torch.log(p + 1e-9)).sum(dim=-1).mean())


def usage_entropy(tokens_per_expert: torch.Tensor) -> float:
    """Entropy of the usage distribution u = c / Σc in nats, −Σ_i u_i ln u_i (0 ln 0 = 0).

    ln E at perfect balance, 0 for a collapse onto one expert; 0.0 for an empty or all-zero count vector.
    """
    return load_summary(tokens_per_expert)[2]


# -- specialization ---------------------------------------------------------------------------------------
def expert_label_counts(
    expert_index: torch.Tensor,
    labels: torch.Tensor,
    n_experts: int,
    n_labels: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Joint count table of routing slots: counts[l, e] = #{(t, j) : mask[t, j], labels[t] = l,
    expert_index[t, j] = e} (OLMoE-style domain / vocabulary specialization, arXiv:2409.02060).

    expert_index (T, K) long, labels (T,) long, mask (T, K) bool or None (all slots). Returns (L, E) long.
    """
    if mask is None:
        mask = torch.ones_like(expert_index, dtype=torch.bool)
    e = expert_index[mask]  # (N,)
    lab = labels[:, None].expand_as(expert_index)[mask]  # (N,)
    if e.numel() and (e.min() < 0 or e.max() >= n_experts):
        raise ValueError(f"expert_index values must be in [0, {n_experts}) where mask is True")
    if lab.numel() and (lab.min() < 0 or lab.max() >= n_labels):
        raise ValueError(f"labels must be in [0, {n_labels})")
    flat = lab.long() * n_experts + e.long()  # (N,)
    return torch.bincount(flat, minlength=n_labels * n_experts).view(n_labels, n_experts)


def mutual_information(counts: torch.Tensor) -> float:
    """Mutual information I(expert; label) in nats from a joint count table (L, E):

    I = Σ_{l,e} p(l,e) ln( p(l,e) / (p(l) p(e)) ),  p = counts / Σ counts  (terms with p(l,e) = 0 are 0).
    0 when experts are independent of labels, at most min(ln L, ln E). 0.0 for an empty table.
    """
    n = counts.detach().double()  # (L, E)
    total = n.sum()
    if n.numel() == 0 or total == 0:
        return 0.0
    p = n / total  # (L, E)
    pl = p.sum(dim=1, keepdim=True)  # (L, 1)
    pe = p.sum(dim=0, keepdim=True)  # (1, E)
    nz = p > 0
    mi = (p[nz] * (p[nz].log() - (pl * pe)[nz].log())).sum()
    return max(0.0, float(mi))  # ≥ 0 in exact arithmetic; clamp float round-off


def co_activation(
    expert_index: torch.Tensor, n_experts: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Expert co-activation (OLMoE, arXiv:2409.02060): A[i, j] = P(token also chose j | token chose i)
    = #tokens choosing both i and j / #tokens choosing i, over tokens, for i ≠ j.

    expert_index (T, K) long, mask (T, K) bool or None (all slots). A token counts once per expert even if
    it lists it twice. Diagonal 0; rows of experts nobody chose are 0. Returns (E, E) float32.
    """
    T = expert_index.shape[0]
    idx = expert_index.long()
    if mask is not None:
        idx = torch.where(mask, idx, torch.full_like(idx, n_experts))  # unselected slots -> spare column E
    chosen = torch.zeros(T, n_experts + 1, dtype=torch.float32, device=idx.device)
    chosen.scatter_(1, idx, 1.0)
    chosen = chosen[:, :n_experts]  # (T, E) 0/1 membership
    both = chosen.T @ chosen  # (E, E) tokens choosing i and j; diagonal = tokens choosing i
    n_i = both.diagonal().clone()  # (E,)
    both.fill_diagonal_(0.0)
    return torch.where(n_i[:, None] > 0, both / n_i.clamp(min=1.0)[:, None], torch.zeros_like(both))


# -- cost -------------------------------------------------------------------------------------------------
def _active_experts(config: MoEConfig) -> float:
    """Routed experts that process one token, on average."""
    if config.router in EVERY_EXPERT_ROUTERS:
        return float(config.n_experts)
    if config.router == "expert_choice":
        cf = 1.0 if config.capacity_factor is None else config.capacity_factor
        return min(float(config.n_experts), cf * config.top_k)
    return float(config.top_k)


def parameter_counts(config: MoEConfig) -> dict[str, int]:
    """Parameter counts of one MoE layer with SwiGLU experts (no biases): gate and up d×h, down h×d = 3dh.

    experts = E·3dh; shared = n_shared·3dh; router = d·E (softmax_topk, switch, expert_choice, sigmoid_bias,
    dense), 2dE (noisy_topk: gate + noise weights), 0 (hash: a fixed table), d·E·slots + 1 (soft: slot
    parameters Φ and a learned scale); total = experts + shared + router.
    active = parameters that touch one token = router + shared + (active experts)·3dh, with k experts for
    token-choice routers, all E for dense and soft, and min(E, cf·k) for expert_choice: each expert takes
    C = ceil(cf·k·T/E) tokens, so a token is processed by cf·k experts on average (cf = 1 when
    capacity_factor is None; ceil ignored; rounded to the nearest integer).
    dense_equivalent = 3·d·(k·h), a dense SwiGLU MLP with hidden k·h (E·h for dense and soft).
    """
    d, E, h, k = config.d_model, config.n_experts, config.expert_hidden, config.top_k
    per_expert = 3 * d * h
    router = {
        "noisy_topk": 2 * d * E,
        "hash": 0,
        "soft": d * E * config.slots_per_expert + 1,
    }.get(config.router, d * E)
    experts = E * per_expert
    shared = config.n_shared_experts * per_expert
    active = router + shared + round(_active_experts(config) * per_expert)
    dense_hidden = E * h if config.router in EVERY_EXPERT_ROUTERS else k * h
    return {
        "experts": experts,
        "shared": shared,
        "router": router,
        "total": experts + shared + router,
        "active": active,
        "dense_equivalent": 3 * d * dense_hidden,
    }


def flops_per_token(config: MoEConfig, n_tokens: int | None = None) -> dict[str, float]:
    """Forward FLOPs per token of one MoE layer, a multiply-add = 2 FLOPs; matmuls only (SiLU, the gating
    products, softmax and top-k are ignored). One SwiGLU expert on one token costs 2·3dh.

    router: 2dE (2·2dE for noisy_topk: gate and noise logits; 0 for hash; 2·d·E·slots for soft logits).
    experts: active experts × 2·3dh (k for token choice, min(E, cf·k) for expert_choice, E for dense).
    Soft MoE (Puigcerver et al. 2023, arXiv:2308.00951) runs E·slots slots for all n_tokens tokens:
    experts = E·slots·2·3dh / n_tokens + 2·2·d·E·slots (dispatch slots = Dᵀx and combine y = C·out);
    n_tokens None means n_tokens = E·slots (one slot per token).
    shared: n_shared·2·3dh. total = router + experts + shared.
    dense_equivalent = 2 × parameter_counts' dense_equivalent (2·3·d·k·h; 2·3·d·E·h for dense and soft);
    ratio_to_dense = total / dense_equivalent.
    """
    d, E, h = config.d_model, config.n_experts, config.expert_hidden
    if n_tokens is not None and n_tokens < 1:
        raise ValueError(f"n_tokens={n_tokens!r} is out of range: allowed a positive integer or None")
    expert_flops = 2.0 * 3 * d * h
    if config.router == "soft":
        slots = E * config.slots_per_expert
        T = slots if n_tokens is None else n_tokens
        router = 2.0 * d * slots
        experts = slots * expert_flops / T + 2 * 2.0 * d * slots
    else:
        router = {"noisy_topk": 2 * 2.0 * d * E, "hash": 0.0}.get(config.router, 2.0 * d * E)
        experts = _active_experts(config) * expert_flops
    shared = config.n_shared_experts * expert_flops
    total = router + experts + shared
    dense_equivalent = 2.0 * parameter_counts(config)["dense_equivalent"]
    return {
        "router": router,
        "experts": experts,
        "shared": shared,
        "total": total,
        "dense_equivalent": dense_equivalent,
        "ratio_to_dense": total / dense_equivalent,
    }
