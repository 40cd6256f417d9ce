"""Memory vs compute of real MoE language models: total and active parameters from their published configs.

Every expert of every MoE layer must sit in some accelerator's memory, because any token may pick it; one token
only runs its k routed experts (plus any shared ones), so the compute per token follows the *active* count:

    total  = embeddings + sum over layers of (attention + norms + router + FFN of all E routed + shared experts)
    active = embeddings + sum over layers of (attention + norms + router + FFN of the k chosen + shared experts)

An expert is a SwiGLU FFN with 3 * d * h weights (gate, up and down projections). The configs below are the
models' published numbers (paper tables and the released config.json files, cited per entry); `stated_total` and
`stated_active` are what each paper says, and tests/moe_core/test_model_memory.py checks that the arithmetic here
lands within a few percent of them. Pure functions: no torch, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

BYTES_PER_PARAM = {"float32": 4.0, "bfloat16": 2.0, "fp8": 1.0}  # weights only: no optimizer state, no KV cache


@dataclass(frozen=True)
class Attention:
    """Grouped-query attention (GQA, or plain multi-head when kv_heads == heads): q, k, v, o projections."""
    heads: int
    kv_heads: int
    head_dim: int
    bias: bool = False  # q, k, v biases (Qwen)

    def params(self, d: int) -> int:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return d * q + 2 * d * kv + q * d + ((q + 2 * kv) if self.bias else 0)


@dataclass(frozen=True)
class LatentAttention:
    """Multi-head latent attention (MLA, DeepSeek-V2/V3): queries and keys/values pass through low-rank latents."""
    heads: int
    q_rank: int  # query compression d_c'
    kv_rank: int  # key-value compression d_c
    nope_dim: int  # per-head dimension without rotary position embedding
    rope_dim: int  # decoupled rotary dimension (its key is shared by all heads)
    v_dim: int

    def params(self, d: int) -> int:
        h = self.heads
        q = d * self.q_rank + self.q_rank + self.q_rank * h * (self.nope_dim + self.rope_dim)  # down, norm, up
        kv = d * (self.kv_rank + self.rope_dim) + self.kv_rank + self.kv_rank * h * (self.nope_dim + self.v_dim)
        return q + kv + h * self.v_dim * d  # + the output projection


@dataclass(frozen=True)
class ModelSpec:
    """One decoder-only MoE language model, as its config describes it."""
    name: str
    d_model: int
    n_layers: int
    vocab: int
    attention: Attention | LatentAttention
    n_experts: int  # routed experts per MoE layer
    top_k: int  # routed experts per token
    expert_hidden: int  # hidden width of one routed expert
    shared_hidden: int = 0  # total hidden width of the shared experts (0: none)
    dense_layers: int = 0  # leading layers with a dense FFN instead of an MoE layer (DeepSeek-V3: 3)
    dense_hidden: int = 0  # hidden width of those dense FFNs
    tied_embeddings: bool = False  # whether the output head reuses the input embedding
    stated_total: float = 0.0  # parameters the paper states (billions)
    stated_active: float = 0.0
    source: str = ""


def swiglu(d: int, h: int) -> int:
    return 3 * d * h


def parameter_budget(spec: ModelSpec) -> dict[str, int]:
    """Parameters by part: 'embeddings', 'attention', 'dense_ffn', 'routed_experts', 'active_routed', 'shared',
    'router', 'norms', then 'total' and 'active'."""
    d = spec.d_model
    moe_layers = spec.n_layers - spec.dense_layers
    parts = {
        "embeddings": spec.vocab * d * (1 if spec.tied_embeddings else 2),
        "attention": spec.n_layers * spec.attention.params(d),
        "dense_ffn": spec.dense_layers * swiglu(d, spec.dense_hidden),
        "routed_experts": moe_layers * spec.n_experts * swiglu(d, spec.expert_hidden),
        "active_routed": moe_layers * spec.top_k * swiglu(d, spec.expert_hidden),
        "shared": moe_layers * swiglu(d, spec.shared_hidden),
        "router": moe_layers * spec.n_experts * d,
        "norms": (2 * spec.n_layers + 1) * d,  # two RMSNorms per layer and a final one
    }
    always = parts["embeddings"] + parts["attention"] + parts["dense_ffn"] + parts["shared"] + parts["router"] \
        + parts["norms"]
    parts["total"] = always + parts["routed_experts"]
    parts["active"] = always + parts["active_routed"]
    return parts


def weight_memory_gb(params: int, dtype: str = "bfloat16") -> float:
    """Gigabytes (10^9 bytes) that the weights alone occupy in the given number format."""
    if dtype not in BYTES_PER_PARAM:
        raise ValueError(f"dtype={dtype!r}: allowed {', '.join(BYTES_PER_PARAM)}")
    return params * BYTES_PER_PARAM[dtype] / 1e9


def memory_table(specs: tuple[ModelSpec, ...] | None = None, dtype: str = "bfloat16") -> list[dict[str, float | str]]:
    """One row per model: total and active parameters (billions), their ratio, and the weights' memory (GB)."""
    rows = []
    for spec in specs or MODELS:
        b = parameter_budget(spec)
        rows.append({
            "model": spec.name, "total_b": b["total"] / 1e9, "active_b": b["active"] / 1e9,
            "active_share": b["active"] / b["total"], "weights_gb": weight_memory_gb(b["total"], dtype),
            "active_gb": weight_memory_gb(b["active"], dtype), "experts": f"{spec.top_k} of {spec.n_experts}"
            + (" + shared" if spec.shared_hidden else ""),
        })
    return rows


MODELS: tuple[ModelSpec, ...] = (
    # Jiang et al. 2024, arXiv:2401.04088, Table 1 (dim 4096, 32 layers, head_dim 128, hidden_dim 14336, 32 heads,
    # 8 kv heads, vocab 32000, 8 experts, top 2) and §2: "47B parameters", "13B active parameters".
    ModelSpec("Mixtral 8x7B", d_model=4096, n_layers=32, vocab=32000, attention=Attention(32, 8, 128),
              n_experts=8, top_k=2, expert_hidden=14336, stated_total=47, stated_active=13,
              source="Jiang et al. 2024, arXiv:2401.04088, Table 1 and §2"),
    # Muennighoff et al. 2024, arXiv:2409.02060: 6.9B total, 1.3B active; the released config
    # (https://huggingface.co/allenai/OLMoE-1B-7B-0924): hidden 2048, 16 layers, 16 heads, 64 experts of width 1024,
    # 8 per token, vocab 50304, untied embeddings.
    ModelSpec("OLMoE-1B-7B", d_model=2048, n_layers=16, vocab=50304, attention=Attention(16, 16, 128),
              n_experts=64, top_k=8, expert_hidden=1024, stated_total=6.9, stated_active=1.3,
              source="Muennighoff et al. 2024, arXiv:2409.02060, Table 1"),
    # DeepSeek-AI 2024, arXiv:2412.19437, §4.2: 61 layers, hidden 7168, MLA with 128 heads of 128, KV compression
    # 512, query compression 1536, decoupled RoPE 64; every FFN but the first three is MoE: 1 shared + 256 routed
    # experts of width 2048, 8 routed per token; 671B total, 37B active (abstract). Dense FFN width 18432 and vocab
    # 129280 from the released config (https://huggingface.co/deepseek-ai/DeepSeek-V3). The multi-token prediction
    # module is not counted in the 671B and not here.
    ModelSpec("DeepSeek-V3", d_model=7168, n_layers=61, vocab=129280,
              attention=LatentAttention(128, q_rank=1536, kv_rank=512, nope_dim=128, rope_dim=64, v_dim=128),
              n_experts=256, top_k=8, expert_hidden=2048, shared_hidden=2048, dense_layers=3, dense_hidden=18432,
              stated_total=671, stated_active=37, source="DeepSeek-AI 2024, arXiv:2412.19437, §4.2"),
)
MODEL_BY_NAME = {m.name: m for m in MODELS}
