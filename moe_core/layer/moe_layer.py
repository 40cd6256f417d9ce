"""MoELayer: route each token to a few SwiGLU experts, run them, and mix their outputs.

    y = sum over kept slots of  w_slot * E_{expert(slot)}(x)   (+ shared experts, DeepSeekMoE)

The layer returns only the feed-forward output; the residual connection belongs to the block around it,
so a token whose every slot was dropped leaves the block unchanged (y = 0), as in Switch and GShard.

Dispatch is vectorized: the kept (token, slot) pairs are sorted by expert once (capacity.assign_slots); then
one autograd Function (dispatch.py) gathers their rows, runs the SwiGLU experts (the weights of
experts.SwiGLUExperts), applies the gates and scatters back with index_add, in cache-sized chunks of rows
(on a CPU with the C kernels built: one C call each way, native/experts.c). No Python loop over tokens.

That composition of modules (_forward_modules) serves every router, device and dtype. For softmax_topk and
switch on a CPU with the C kernels built, the same computation runs as one C call each way instead
(_forward_fused, fused_layer.py): at the Playground's sizes the composition's dispatch overhead was most of a
training step. tests/moe_core/test_fused_layer.py holds the two to the same values and gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from moe_core.accelerator.dispatch import dispatch_experts_combine
from moe_core.accelerator.fused_layer import FusedMoE, fused_layer_kernels
from moe_core.layer.capacity import assign_slots, expert_capacity
from moe_core.layer.config import MoEConfig
from moe_core.layer.experts import SwiGLU, SwiGLUExperts
from moe_core.layer.routers import SigmoidBiasRouter, SoftRouter, build_router
from moe_core.layer.routers.base import Router

# config fields that can change between steps without rebuilding the layer
LIVE_FIELDS = frozenset(
    {"capacity_factor", "overflow_policy", "aux_loss_coef", "z_loss_coef", "router_noise", "bias_update_rate",
     "normalize_topk", "router_dtype"}
)


@dataclass
class RoutingInfo:
    """What one forward pass decided. Plot-facing tensors are detached; `losses` keep their gradient."""

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
    router_entropy_sum: torch.Tensor | None = None  # () sum over tokens of the entropy of router_probs, when the
    # layer computed it on the way (the fused C layer); else None and whoever needs it computes it

    @property
    def n_tokens(self) -> int:
        return self.router_probs.shape[0]

    @property
    def n_experts(self) -> int:
        return self.router_probs.shape[1]


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

    def forward(
        self, x: torch.Tensor, token_ids: torch.Tensor | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, RoutingInfo]:
        dtype = self.experts.w_in.dtype
        if x.dtype != dtype:  # say so before torch's "expected m1 and m2 to have the same dtype", deep in a matmul
            raise ValueError(f"input dtype {x.dtype} does not match the layer's parameters ({dtype}): cast the input "
                             f"with x.to({dtype}) or the layer with layer.to({x.dtype})")
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (T, d)
        fused = self._forward_fused(x, noise)  # the whole layer in one C call, where it applies
        y, info = fused if fused is not None else self._forward_modules(x, token_ids, noise)
        if self.shared is not None:
            y = y + self.shared(x)
        return y.to(x.dtype).reshape(shape), info

    def _forward_modules(self, x: torch.Tensor, token_ids: torch.Tensor | None, noise: torch.Tensor | None
                         ) -> tuple[torch.Tensor, RoutingInfo]:
        """Router module -> capacity.assign_slots -> dispatch: every router, device and dtype."""
        cfg = self.config
        T = x.shape[0]
        if isinstance(self.router, SoftRouter):
            y, out = self.router.mix(x, self.experts, noise)  # (T, d)
            kept = torch.ones_like(out.expert_index, dtype=torch.bool)
            tokens_per_expert = torch.full((cfg.n_experts,), out.capacity, dtype=torch.long, device=x.device)
            kept_per_expert = tokens_per_expert
            capacity = out.capacity
        else:
            out = self.router(x, token_ids, noise)
            k = out.expert_index.shape[1]
            if out.uses_capacity:
                capacity = limit = expert_capacity(T, cfg.n_experts, k, cfg.capacity_factor)
            else:  # the router fixed its own slots (expert_choice) or has none (hash, dense)
                capacity, limit = out.capacity, None
            priority = out.priority if cfg.overflow_policy == "probability" else None
            slots = assign_slots(
                out.expert_index, cfg.n_experts, limit, out.selected, priority, out.counts, out.presorted
            )
            if out.unit_gates:  # gates of exactly 1 need no multiply (and send back no gradient: d(p/p)/dp = 0)
                w = None
            elif slots.kept_gates is not None:  # the router's sort came with the gates in its order
                w = slots.kept_gates.to(x.dtype)  # (N,)
            else:
                w = out.gates.t().reshape(-1).index_select(0, slots.kept_pairs).to(x.dtype)  # (N,) kept pairs
            each_token_once = k == 1 and limit is None and out.selected is None  # a permutation of the tokens
            y = dispatch_experts_combine(
                x, w, self.experts.w_in, self.experts.w_out, slots.token_order, slots.kept_per_expert,
                each_token_once,
            )  # (T, d)
            if out.unit_gates and out.gates.requires_grad:  # y did not use the gates: add 0 (an empty sum of them)
                y = y + out.gates[:0].sum()  # so that y gives the router a zero gradient, as the C layer does, not None
            kept, tokens_per_expert, kept_per_expert = slots.kept, slots.tokens_per_expert, slots.kept_per_expert
        if out.selected is None and capacity is None:  # nothing can drop: kept is all True
            selected, dropped, combine = kept, torch.zeros_like(kept), out.gates.detach()
        else:
            selected = out.selected if out.selected is not None else torch.ones_like(kept)
            dropped, combine = selected & ~kept, (out.gates * kept).detach()
        info = RoutingInfo(
            expert_index=out.expert_index.detach(),
            combine_weights=combine,
            router_probs=out.probs.detach(),
            router_logits=out.logits.detach().float() if out.logits.dtype == torch.bfloat16 else out.logits.detach(),
            dropped=dropped,
            selected=selected,
            tokens_per_expert=tokens_per_expert,
            kept_per_expert=kept_per_expert,
            capacity=capacity,
            losses=out.losses,
            aux_loss=self.weighted_aux_loss(out.losses, x),
        )
        return y, info

    def _forward_fused(self, x: torch.Tensor, noise: torch.Tensor | None) -> tuple[torch.Tensor, RoutingInfo] | None:
        """softmax_topk and switch with position priority (or no capacity), on a CPU with the C kernels built:
        moe_core/accelerator/fused_layer.py. None where it does not apply."""
        cfg = self.config
        form = self.router.softmax_topk_form() if isinstance(self.router, Router) else None
        if form is None or (cfg.capacity_factor is not None and cfg.overflow_policy != "position"):
            return None
        if cfg.router_dtype != "float32":  # the C kernels are float32/float64 only: bfloat16 takes the torch ops
            return None
        k, normalize = form
        w_router, w_in, w_out = self.router.weight, self.experts.w_in, self.experts.w_out
        lib = fused_layer_kernels(x, x, w_router, w_in, w_out, k)  # checked before any jitter is drawn
        if lib is None:
            return None
        xr = self.router.jittered(x, noise)  # (T, d): x itself unless router jitter is on in training
        if xr is not x and fused_layer_kernels(x, xr, w_router, w_in, w_out, k) is None:  # a caller's odd noise
            return None
        T = x.shape[0]
        capacity = expert_capacity(T, cfg.n_experts, k, cfg.capacity_factor)
        (y, load_balance, z, aux, logits, probs, index, combine, dropped, counts, kept_counts,
         entropy_sum) = FusedMoE.apply(
            x, xr, w_router, w_in, w_out, k, normalize, capacity, k == 1 and normalize, cfg.aux_loss_coef,
            cfg.z_loss_coef, cfg.z_loss_coef > 0, lib)
        info = RoutingInfo(
            expert_index=index, combine_weights=combine, router_probs=probs, router_logits=logits,
            dropped=dropped, selected=torch.ones_like(dropped), tokens_per_expert=counts,
            kept_per_expert=kept_counts, capacity=capacity, losses={"load_balance": load_balance, "z": z},
            aux_loss=aux, router_entropy_sum=entropy_sum,
        )
        return y, info

    def weighted_aux_loss(self, losses: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """aux_loss_coef * (load_balance, or importance + load for noisy_topk) + z_loss_coef * z."""
        cfg = self.config
        terms = []  # (coefficient, loss)
        if "load_balance" in losses:
            terms.append((cfg.aux_loss_coef, losses["load_balance"]))
        if "importance" in losses:
            terms.append((cfg.aux_loss_coef, losses["importance"] + losses["load"]))
        if "z" in losses:
            terms.append((cfg.z_loss_coef, losses["z"]))
        if not terms:
            return torch.zeros((), device=x.device)
        total = terms[0][1] * terms[0][0]
        for coef, loss in terms[1:]:
            total = torch.add(total, loss, alpha=coef)  # one op: total + coef * loss
        return total

    def update_router_bias(self) -> None:
        """Apply the auxiliary-loss-free bias step (sigmoid_bias); a no-op for other routers."""
        if isinstance(self.router, SigmoidBiasRouter):
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
    active = config.n_experts if config.router in ("dense", "soft") else config.top_k
    return active * config.expert_hidden
