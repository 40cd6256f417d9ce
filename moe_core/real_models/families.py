"""The MoE families whose routing the Real models page reads, and each family's own gate rule.

Every family's decoder returns its routers' pre-softmax logits, one (tokens, E) tensor per MoE layer, when the
model is called with transformers' documented `output_router_logits=True`. The logits alone do not say which
experts ran with which weights: each family turns them into top-k experts and gate weights by its own rule.
`gate()` applies that rule as the family's router module does in transformers 5.x (models/<family>/modeling_*.py):

- Mixtral (Jiang et al. 2024, arXiv:2401.04088, eq. 2 and §2.1): softmax over all E, top-k, renormalised to sum 1.
- Qwen2-MoE, Qwen3-MoE, OLMoE (Muennighoff et al. 2024, arXiv:2409.02060, §2): softmax over all E, top-k,
  renormalised only when the config's `norm_topk_prob` is set (OLMoE-1B-7B ships it off, Qwen3-MoE on).
  Qwen2-MoE's shared expert runs on every token, scaled by its own gate sigmoid(w·x) outside the router; the
  page records that weight too (routing.py, LayerRouting.shared_gate), read with a forward hook on the gate.
  DeepSeek's shared experts have no gate: they always add with weight 1.
- Granite-MoE: top-k of the logits, then softmax over those k only (same experts as softmax-then-top-k;
  weights sum to 1).
- DeepSeek-V2 (DeepSeek-AI 2024, arXiv:2405.04434, §2.1.2): softmax; "greedy" top-k, or "group_limited_greedy":
  keep the `topk_group` groups with the largest single score, top-k inside them; weights times
  `routed_scaling_factor`, not renormalised.
- DeepSeek-V3 (DeepSeek-AI 2024, arXiv:2412.19437, §2.1.2): sigmoid scores; the experts are chosen on the scores
  plus `e_score_correction_bias` (auxiliary-loss-free balancing), inside the `topk_group` groups whose two best
  biased scores sum highest; the weights are the unbiased scores of the chosen experts, normalised to sum 1 when
  `norm_topk_prob`, times `routed_scaling_factor`.

Ranks: rank 0 is the expert with the largest gate weight (for every family above but DeepSeek-V3 this is also
the largest selection score; for DeepSeek-V3 the bias may pick an expert whose weight ranks lower).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

GateRule = Callable[[torch.Tensor, Any, torch.nn.Module], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Family:
    """One supported model family: its transformers `model_type`, display name, router module class and its
    gate rule (logits (T, E), config, router module) -> (experts (T, k) long,
    weights (T, k) float32, probs (T, E) float32, the distribution router entropy is measured on)."""

    model_type: str
    name: str
    router_class: str
    rule: GateRule
    rule_text: str
    shared_gate: str | None = None  # attribute of the MoE block holding the shared expert's own gate, if any


def _ranked(experts: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each token's k slots by gate weight, largest first (ties: lower expert id first), so rank 0 is the
    first choice whatever order the family's topk returned."""
    order = torch.sort(experts, dim=-1, stable=True).indices  # tie-break by expert id
    experts, weights = experts.gather(1, order), weights.gather(1, order)
    order = torch.sort(weights, dim=-1, descending=True, stable=True).indices
    return experts.gather(1, order).long(), weights.gather(1, order)


def _softmax_topk(norm: bool) -> GateRule:
    def rule(logits: torch.Tensor, config: Any, router: torch.nn.Module):
        probs = torch.softmax(logits.float(), dim=-1)
        weights, experts = torch.topk(probs, config.num_experts_per_tok, dim=-1)
        if norm or getattr(config, "norm_topk_prob", False):
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return (*_ranked(experts, weights), probs)
    return rule


def _granite(logits: torch.Tensor, config: Any, router: torch.nn.Module):
    top_logits, experts = torch.topk(logits.float(), config.num_experts_per_tok, dim=-1)
    weights = torch.softmax(top_logits, dim=-1)
    return (*_ranked(experts, weights), torch.softmax(logits.float(), dim=-1))


def _group_mask(group_scores: torch.Tensor, topk_group: int, n_experts: int) -> torch.Tensor:
    """(T, E) bool: the experts inside each token's `topk_group` best groups."""
    T, G = group_scores.shape
    keep = torch.zeros_like(group_scores, dtype=torch.bool)
    keep.scatter_(1, torch.topk(group_scores, k=topk_group, dim=-1).indices, True)
    return keep[:, :, None].expand(T, G, n_experts // G).reshape(T, n_experts)


def _deepseek_v2(logits: torch.Tensor, config: Any, router: torch.nn.Module):
    probs = torch.softmax(logits.float(), dim=-1)
    scores = probs
    if config.topk_method == "group_limited_greedy":
        T, E = scores.shape
        best = scores.view(T, config.n_group, E // config.n_group).max(dim=-1).values
        scores = scores.masked_fill(~_group_mask(best, config.topk_group, E), 0.0)
    elif config.topk_method != "greedy":
        raise ValueError(f"DeepSeek-V2 topk_method={config.topk_method!r} is not one transformers implements")
    weights, experts = torch.topk(scores, k=config.num_experts_per_tok, dim=-1)
    return (*_ranked(experts, weights * config.routed_scaling_factor), probs)


def _deepseek_v3(logits: torch.Tensor, config: Any, router: torch.nn.Module):
    scores = torch.sigmoid(logits.float())
    choice = scores + router.e_score_correction_bias.float()
    T, E = choice.shape
    groups = choice.view(T, config.n_group, E // config.n_group).topk(2, dim=-1).values.sum(dim=-1)
    choice = choice.masked_fill(~_group_mask(groups, config.topk_group, E), float("-inf"))
    experts = torch.topk(choice, k=config.num_experts_per_tok, dim=-1).indices
    weights = scores.gather(1, experts)
    if config.norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    probs = scores / scores.sum(dim=-1, keepdim=True)  # sigmoid scores do not sum to 1: entropy of their shares
    return (*_ranked(experts, weights * config.routed_scaling_factor), probs)


SOFTMAX_TOPK = "softmax over all experts, top-k"
FAMILIES: dict[str, Family] = {f.model_type: f for f in (
    Family("mixtral", "Mixtral", "MixtralTopKRouter", _softmax_topk(True),
           f"{SOFTMAX_TOPK}, renormalised over the k"),
    Family("qwen2_moe", "Qwen2-MoE", "Qwen2MoeTopKRouter", _softmax_topk(False),
           f"{SOFTMAX_TOPK}, renormalised if norm_topk_prob; the shared expert has its own sigmoid gate",
           shared_gate="shared_expert_gate"),
    Family("qwen3_moe", "Qwen3-MoE", "Qwen3MoeTopKRouter", _softmax_topk(False),
           f"{SOFTMAX_TOPK}, renormalised if norm_topk_prob"),
    Family("olmoe", "OLMoE", "OlmoeTopKRouter", _softmax_topk(False),
           f"{SOFTMAX_TOPK}, renormalised if norm_topk_prob"),
    Family("granitemoe", "Granite-MoE", "GraniteMoeTopKRouter", _granite,
           "top-k of the logits, softmax over those k"),
    Family("deepseek_v2", "DeepSeek-V2", "DeepseekV2TopkRouter", _deepseek_v2,
           "softmax, (group-limited) top-k, times routed_scaling_factor"),
    Family("deepseek_v3", "DeepSeek-V3", "DeepseekV3TopkRouter", _deepseek_v3,
           "sigmoid + bias picks (group-limited) top-k; unbiased weights, normalised, times routed_scaling_factor"),
)}

# MoE families transformers knows but this page does not read, and why (checked against transformers 5.x).
UNSUPPORTED = {
    "granitemoeshared": "its shared expert changes nothing about routing, but it is not tested here yet",
    "granitemoehybrid": "a hybrid Mamba/attention model: not tested here yet",
    "jetmoe": "routes attention heads as well as MLPs (mixture of attention heads): one expert view does not fit",
    "switch_transformers": "an encoder-decoder model: the page reads decoder-only language models",
    "nllb_moe": "an encoder-decoder translation model: the page reads decoder-only language models",
    "deepseek_v32": "not tested here yet",
    "deepseek_v4": "not tested here yet",
}


def family_of(model_type: str) -> Family | None:
    return FAMILIES.get(model_type)


def supported_names() -> str:
    return ", ".join(f.name for f in FAMILIES.values())
