"""MoEConfig: every knob of one Mixture-of-Experts layer, validated on construction.

Each invalid value raises a ValueError that names the field, the value and the allowed range, so the
same message can be shown under a slider, next to a URL parameter or on a command line.
"""

from __future__ import annotations

from dataclasses import dataclass

from moe_core.validation import DictRoundTrip, check_bool, check_choice, check_float, check_int


@dataclass(frozen=True)
class RouterInfo:
    """One router, every fact about it in one place: the app's label, the README's citation, and the rules on k
    and E that its paper fixes (MoEConfig enforces them; the app's widgets and URL parser follow them)."""

    name: str  # the value of MoEConfig.router
    label: str  # the app's label (Router box, Reference page)
    short: str  # its name in the app's sentences ("the <short> router")
    paper: str  # the README's citation
    does: str  # the README's "what it does"
    causal: bool = True  # False: a token's route depends on the rest of the batch, no language model
    forced_top_k: int | None = None  # k fixed by the paper
    forced_why: str = ""  # why, as a clause: "<forced_why>, so top_k must be <forced_top_k>"
    k_caption: str = ""  # why the app shows no Top-k slider (forced or every-expert routers)
    every_expert: bool = False  # every expert processes every token: top_k is not read
    bf16: bool = False  # may compute its logits and softmax in bfloat16 (router_dtype)

    @property
    def min_experts(self) -> int:
        """A router that picks k different experts per token needs at least k experts."""
        return self.forced_top_k or 1


ROUTER_CATALOGUE: tuple[RouterInfo, ...] = (
    RouterInfo("softmax_topk", "softmax top-k (Mixtral)", "softmax top-k", "Mixtral (2024)",
               "softmax over experts, keep the top k, optionally renormalize", bf16=True),
    RouterInfo("gshard_top2", "GShard top-2 (Lepikhin 2020)", "GShard top-2", "GShard (2020), §2.2 and Algorithm 1",
               "top-2, weights renormalized; the 2nd expert kept only at random, with probability 2·g₂, in training",
               forced_top_k=2, forced_why="GShard's gating is top-2 (the 2nd expert kept at random)",
               k_caption="GShard's router is top-2; its 2nd expert is kept at random, with probability 2·g₂ (its "
                         "normalized weight g₂), in training"),
    RouterInfo("noisy_topk", "noisy top-k (Shazeer 2017)", "noisy top-k", "Shazeer et al. (2017)",
               "learned Gaussian noise on the logits, importance and load losses"),
    RouterInfo("switch", "switch, top-1 (Fedus 2021)", "switch", "Switch Transformer (2021)",
               "top-1, raw probability as the weight, input jitter", forced_top_k=1,
               forced_why="the Switch Transformer routes each token to exactly one expert",
               k_caption="the switch router is top-1", bf16=True),
    RouterInfo("expert_choice", "expert choice (Zhou 2022)", "expert choice", "Zhou et al. (2022)",
               "each expert picks its top-C tokens (non-causal)", causal=False),
    RouterInfo("hash", "hash, fixed table (Roller 2021)", "hash", "Roller et al. (2021)",
               "a fixed random table, nothing learned (the paper: one expert; k > 1 is ours)"),
    RouterInfo("soft", "soft MoE (Puigcerver 2023)", "Soft MoE", "Soft MoE (2023)",
               "experts process weighted averages of all tokens (non-causal)", causal=False, every_expert=True,
               k_caption="Soft MoE mixes every expert's slots"),
    RouterInfo("sigmoid_bias", "sigmoid + bias (DeepSeek-V3)", "sigmoid + bias", "DeepSeek-V3 (2024)",
               "sigmoid scores, auxiliary-loss-free balancing bias"),
    RouterInfo("dense", "dense soft mixture (after Jacobs 1991)", "dense mixture",
               "Jacobs et al. (1991), trained on the blended (cooperative) error",
               "every expert runs, weighted by a softmax gate", every_expert=True,
               k_caption="the dense mixture runs every expert"),
)
ROUTER_INFO = {r.name: r for r in ROUTER_CATALOGUE}
ROUTERS = tuple(ROUTER_INFO)
CAUSAL_ROUTERS = tuple(r.name for r in ROUTER_CATALOGUE if r.causal)
FORCED_TOP_K = {r.name: r.forced_top_k for r in ROUTER_CATALOGUE if r.forced_top_k is not None}
EVERY_EXPERT_ROUTERS = tuple(r.name for r in ROUTER_CATALOGUE if r.every_expert)
# the precision of the router's logits and softmax: float32 is Switch's "selective precision" (Fedus et al. 2021,
# §2.4); bfloat16 computes them as plain mixed-precision training would, on the routers built on softmax top-k
ROUTER_DTYPES = ("float32", "bfloat16")
BF16_ROUTERS = tuple(r.name for r in ROUTER_CATALOGUE if r.bf16)
# config fields that can change between steps without rebuilding the layer (MoELayer.set_hyperparameters)
LIVE_FIELDS = frozenset(
    {"capacity_factor", "overflow_policy", "aux_loss_coef", "z_loss_coef", "router_noise", "bias_update_rate",
     "normalize_topk", "router_dtype"}
)
OVERFLOW_POLICIES = ("position", "probability")

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
    # what real models need to be reproduced exactly (tests/moe_core/test_hf_families.py); no app control sets them
    n_group: int = 1  # sigmoid_bias: DeepSeek-V3's expert groups (1 = no grouping) ...
    topk_group: int = 1  # ... of which each token may use its topk_group best (DeepSeek-V3: 8 and 4)
    routed_scaling_factor: float = 1.0  # sigmoid_bias: routed gates times this (DeepSeek-V3: 2.5)
    shared_expert_gate: bool = False  # Qwen2-MoE: shared experts' output times sigmoid(x W_sg), W_sg (1, d)

    def __post_init__(self) -> None:
        check_int(self, "d_model", 1, MAX_D_MODEL)
        check_int(self, "n_experts", 1, MAX_EXPERTS)
        check_choice(self, "router", ROUTERS)
        router = ROUTER_INFO[self.router]
        if isinstance(self.n_experts, int) and self.n_experts < router.min_experts:
            raise ValueError(f"n_experts={self.n_experts} is not allowed with router '{self.router}': it picks "
                             f"{router.min_experts} different experts per token, so n_experts must be at least "
                             f"{router.min_experts}")
        check_int(self, "top_k", 1, self.n_experts if isinstance(self.n_experts, int) else MAX_EXPERTS)
        if router.forced_top_k is not None and self.top_k != router.forced_top_k:
            raise ValueError(f"top_k={self.top_k} is not allowed with router '{self.router}': {router.forced_why}, "
                             f"so top_k must be {router.forced_top_k} (use 'softmax_topk' for another k)")
        check_int(self, "expert_hidden", 1, MAX_EXPERT_HIDDEN)
        if self.capacity_factor is not None:
            check_float(self, "capacity_factor", 0.0, MAX_CAPACITY_FACTOR, low_open=True,
                         extra="or None for dropless")
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
        self._check_real_model_fields()

    def _check_real_model_fields(self) -> None:
        """DeepSeek-V3's group-limited routing (arXiv:2412.19437, §2.1.2, and transformers' DeepseekV3TopkRouter:
        E experts in n_group groups of E / n_group; a group scores the sum of its two best biased scores; a token
        chooses its top-k among the experts of its topk_group best groups), its routed_scaling_factor, and
        Qwen2-MoE's gated shared expert (transformers' Qwen2MoeSparseMoeBlock.shared_expert_gate)."""
        check_int(self, "n_group", 1, self.n_experts)
        check_int(self, "topk_group", 1, self.n_group)
        check_float(self, "routed_scaling_factor", 0.0, 100.0, low_open=True)
        check_bool(self, "shared_expert_gate")
        deepseek = {"n_group": self.n_group != 1, "topk_group": self.topk_group != 1,
                    "routed_scaling_factor": self.routed_scaling_factor != 1.0}
        for name, used in deepseek.items():
            if used and self.router != "sigmoid_bias":
                raise ValueError(f"{name}={getattr(self, name)} is not allowed with router '{self.router}': it is "
                                 "DeepSeek-V3's rule, for router 'sigmoid_bias' only")
        if self.n_group > 1:
            per_group = self.n_experts // self.n_group
            if self.n_experts % self.n_group or per_group < 2:
                raise ValueError(f"n_group={self.n_group} is not allowed with n_experts={self.n_experts}: the "
                                 "experts split into n_group equal groups of at least 2 (a group scores the sum "
                                 "of its two best experts)")
            if self.top_k > self.topk_group * per_group:
                raise ValueError(f"top_k={self.top_k} is not allowed with topk_group={self.topk_group} groups of "
                                 f"{per_group} experts: a token chooses among {self.topk_group * per_group}")
        if self.shared_expert_gate and self.n_shared_experts == 0:
            raise ValueError("shared_expert_gate=True is not allowed with n_shared_experts=0: it gates the shared "
                             "experts' output (Qwen2-MoE); set n_shared_experts >= 1")

    @property
    def is_causal(self) -> bool:
        """False for routers that mix information across tokens (expert_choice, soft)."""
        return self.router in CAUSAL_ROUTERS

    @property
    def slots_per_token(self) -> int:
        """K: columns of RoutingInfo.expert_index. k for token choice; E when every expert may take a token."""
        return self.n_experts if self.router == "expert_choice" or ROUTER_INFO[self.router].every_expert else self.top_k
