"""MoEConfig: every knob of one Mixture-of-Experts layer, validated on construction.

Each invalid value raises a ValueError that names the field, the value and the allowed range, so the
same message can be shown under a slider, next to a URL parameter or on a command line.
"""

from __future__ import annotations

from dataclasses import dataclass

from moe_core.validation import DictRoundTrip, check_bool, check_choice, check_float, check_int

ROUTERS = (
    "softmax_topk",  # softmax over experts, top-k, both experts always (Mixtral / Qwen)
    "gshard_top2",  # Lepikhin et al. 2020 (GShard), top-2; the 2nd expert kept at random, w.p. 2*g2 (Alg. 1)
    "noisy_topk",  # Shazeer et al. 2017, learned Gaussian noise on the logits
    "switch",  # Fedus et al. 2021, top-1 with multiplicative input jitter
    "expert_choice",  # Zhou et al. 2022, each expert picks its top-C tokens (non-causal)
    "hash",  # Roller et al. 2021, a fixed random table, nothing learned
    "soft",  # Puigcerver et al. 2023, Soft MoE slots (non-causal)
    "sigmoid_bias",  # DeepSeek-V3, sigmoid scores + auxiliary-loss-free bias
    "dense",  # the 1991 architecture (Jacobs et al.): every expert runs, softmax-weighted (cooperative error)
)
CAUSAL_ROUTERS = tuple(r for r in ROUTERS if r not in ("expert_choice", "soft"))
OVERFLOW_POLICIES = ("position", "probability")
# the precision of the router's logits and softmax: float32 is Switch's "selective precision" (Fedus et al. 2021,
# §2.4); bfloat16 computes them as plain mixed-precision training would, on the routers built on softmax top-k
ROUTER_DTYPES = ("float32", "bfloat16")
BF16_ROUTERS = ("softmax_topk", "switch")

MAX_EXPERTS = 256
MAX_D_MODEL = 4096
MAX_EXPERT_HIDDEN = 16384
MAX_CAPACITY_FACTOR = 64.0
MAX_SHARED_EXPERTS = 16
MAX_SLOTS_PER_EXPERT = 64


@dataclass(frozen=True)
class MoEConfig(DictRoundTrip):
    d_model: int = 64  # width of the tokens entering and leaving the layer
    n_experts: int = 8  # routed experts E (1-256)
    top_k: int = 2  # experts per token k (token-choice routers); tokens per expert scale for expert_choice
    expert_hidden: int = 128  # hidden width h of each SwiGLU expert
    capacity_factor: float | None = None  # C = ceil(cf * k * T / E); None = dropless
    router: str = "softmax_topk"  # one of ROUTERS
    normalize_topk: bool = True  # renormalize the k selected weights to sum to 1
    overflow_policy: str = "position"  # who keeps a slot when an expert overflows: position | probability
    aux_loss_coef: float = 0.01  # weight of the load-balancing loss (Switch uses 0.01)
    z_loss_coef: float = 0.0  # weight of the router z-loss (ST-MoE uses 0.001)
    router_noise: float = 0.0  # train-time noise on the router only (jitter eps; std for soft)
    n_shared_experts: int = 0  # always-on experts added to every token (DeepSeekMoE)
    bias_update_rate: float = 1e-3  # sigmoid_bias: bias step per optimizer step (DeepSeek-V3 uses 1e-3)
    slots_per_expert: int = 4  # soft: learned slots per expert (Soft MoE's p)
    router_dtype: str = "float32"  # precision of the router logits and softmax: one of ROUTER_DTYPES

    def __post_init__(self) -> None:
        check_int(self, "d_model", 1, MAX_D_MODEL)
        check_int(self, "n_experts", 1, MAX_EXPERTS)
        if self.router == "gshard_top2" and isinstance(self.n_experts, int) and self.n_experts < 2:
            raise ValueError(f"n_experts={self.n_experts} is not allowed with router 'gshard_top2': GShard's top-2 "
                             "gating picks two different experts per token, so n_experts must be at least 2")
        check_int(self, "top_k", 1, self.n_experts if isinstance(self.n_experts, int) else MAX_EXPERTS)
        check_int(self, "expert_hidden", 1, MAX_EXPERT_HIDDEN)
        if self.capacity_factor is not None:
            check_float(self, "capacity_factor", 0.0, MAX_CAPACITY_FACTOR, low_open=True,
                         extra="or None for dropless")
        check_choice(self, "router", ROUTERS)
        check_bool(self, "normalize_topk")
        check_choice(self, "overflow_policy", OVERFLOW_POLICIES)
        check_float(self, "aux_loss_coef", 0.0, 100.0)
        check_float(self, "z_loss_coef", 0.0, 100.0)
        check_float(self, "router_noise", 0.0, 10.0)
        check_int(self, "n_shared_experts", 0, MAX_SHARED_EXPERTS)
        check_float(self, "bias_update_rate", 0.0, 1.0)
        check_int(self, "slots_per_expert", 1, MAX_SLOTS_PER_EXPERT)
        check_choice(self, "router_dtype", ROUTER_DTYPES)
        if self.router_dtype == "bfloat16" and self.router not in BF16_ROUTERS:
            raise ValueError(
                f"router_dtype='bfloat16' is not allowed with router '{self.router}': the bfloat16 router is built "
                f"for the softmax top-k routers ({', '.join(BF16_ROUTERS)}); use router_dtype='float32'"
            )
        if self.router == "gshard_top2" and self.top_k != 2:
            raise ValueError(
                f"top_k={self.top_k} is not allowed with router 'gshard_top2': GShard's gating is top-2 (the 2nd "
                "expert kept at random), so top_k must be 2 (use 'softmax_topk' for another k)"
            )
        if self.router == "switch" and self.top_k != 1:
            raise ValueError(
                f"top_k={self.top_k} is not allowed with router 'switch': the Switch Transformer routes each "
                "token to exactly one expert, so top_k must be 1 (use 'softmax_topk' for k > 1)"
            )

    @property
    def is_causal(self) -> bool:
        """False for routers that mix information across tokens (expert_choice, soft)."""
        return self.router in CAUSAL_ROUTERS

    @property
    def slots_per_token(self) -> int:
        """K: columns of RoutingInfo.expert_index. k for token choice; E when every expert may take a token."""
        return self.n_experts if self.router in ("expert_choice", "soft", "dense") else self.top_k
