"""Networks built around MoELayer: a 2-D/regression network, its dense twin, and a tiny character LM.

Every model returns (output, infos): infos is one RoutingInfo per MoE block (empty for the dense twin),
which is all a trainer or a view needs to see how tokens were routed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from moe_core.layer.config import CAUSAL_ROUTERS, MoEConfig
from moe_core.layer.experts import SwiGLU
from moe_core.layer.moe_layer import MoELayer, RoutingInfo, dense_equivalent_hidden
from moe_core.validation import check_bool, check_int

GRID_CELLS = 64  # the hash router sees 2-D points as cells of a 64 x 64 grid over [-1.2, 1.2]^2
GRID_EXTENT = 1.2


@dataclass(frozen=True)
class ModelConfig:
    moe: MoEConfig = MoEConfig()  # the MoE layer of every block
    n_layers: int = 1  # residual MoE blocks (1-4)
    dense: bool = False  # the dense twin: a SwiGLU of the same active width instead of each MoE layer
    context: int = 64  # language model: characters per training window (8-256)
    n_heads: int = 4  # language model: attention heads (must divide d_model)

    def __post_init__(self) -> None:
        if not isinstance(self.moe, MoEConfig):
            raise ValueError(f"moe must be a MoEConfig, got {type(self.moe).__name__}")
        for name, low, high in (("n_layers", 1, 4), ("context", 8, 256), ("n_heads", 1, 16)):
            check_int(self, name, low, high)
        check_bool(self, "dense")

    def to_dict(self) -> dict:
        return {"moe": self.moe.to_dict(), "n_layers": self.n_layers, "dense": self.dense,
                "context": self.context, "n_heads": self.n_heads}

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        data = dict(data)
        unknown = sorted(set(data) - {"moe", "n_layers", "dense", "context", "n_heads"})
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}")
        return cls(moe=MoEConfig.from_dict(data.pop("moe", {})), **data)


def feed_forward(cfg: ModelConfig) -> nn.Module:
    """One block's feed-forward: the MoE layer, or for the dense twin a SwiGLU with as many active weights."""
    if cfg.dense:
        return DenseFFN(cfg.moe.d_model, dense_equivalent_hidden(cfg.moe))
    return MoELayer(cfg.moe)


class DenseFFN(nn.Module):
    """A SwiGLU that answers like an MoE layer with no routing: (y, None)."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.mlp = SwiGLU(d_model, hidden)

    def forward(self, x, token_ids=None):
        return self.mlp(x), None


def grid_cell_ids(points: torch.Tensor) -> torch.Tensor:
    """(N, D) raw inputs -> (N,) id of the GRID_CELLS^2 grid cell (first two coordinates; 1-D uses one)."""
    cells = ((points[:, :2] + GRID_EXTENT) / (2 * GRID_EXTENT) * GRID_CELLS).long().clamp(0, GRID_CELLS - 1)
    return cells[:, 0] * GRID_CELLS + (cells[:, 1] if cells.shape[1] > 1 else 0)


class PointMoENet(nn.Module):
    """2-D (or 1-D) inputs -> linear embedding -> n residual blocks  h = h + FFN(LayerNorm(h)) -> head.

    Classification (n_outputs = classes) or regression (n_outputs = 1). The router of block 1 sees a
    linear function of the input point, so its regions on the plane are the gate "carving up the input
    space" of Jacobs et al. (1991).
    """

    def __init__(self, cfg: ModelConfig, input_dim: int, n_outputs: int):
        super().__init__()
        d = cfg.moe.d_model
        self.cfg = cfg
        self.embed = nn.Linear(input_dim, d)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(cfg.n_layers))
        self.ffns = nn.ModuleList(feed_forward(cfg) for _ in range(cfg.n_layers))
        self.norm_out = nn.LayerNorm(d)
        self.head = nn.Linear(d, n_outputs)

    def forward(self, points: torch.Tensor) -> tuple[torch.Tensor, list[RoutingInfo]]:
        token_ids = grid_cell_ids(points) if self.cfg.moe.router == "hash" else None  # (N,) what hash hashes
        h = self.embed(points)  # (N, d)
        infos = []
        for norm, ffn in zip(self.norms, self.ffns, strict=True):
            y, info = ffn(norm(h), token_ids=token_ids)
            h = h + y
            if info is not None:
                infos.append(info)
        return self.head(self.norm_out(h)), infos


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, S, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)  # (B, S, d) each
        q, k, v = (t.view(B, S, self.n_heads, d // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, S, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, S, hs)
        return self.proj(y.transpose(1, 2).reshape(B, S, d))


class TinyMoELM(nn.Module):
    """A character-level decoder-only transformer (nanoGPT-shaped) whose feed-forward blocks are MoE layers.

    Routers that look across tokens (expert_choice, soft) are refused: they would let a character's route
    depend on characters after it, which a model that writes left to right cannot know.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        if cfg.moe.router not in CAUSAL_ROUTERS:
            raise ValueError(
                f"router '{cfg.moe.router}' cannot be used in the language model: it is non-causal (each "
                "token's route depends on the other tokens of the batch, including later characters, which a "
                "model generating left to right has not seen yet); choose one of " + ", ".join(CAUSAL_ROUTERS)
            )
        d = cfg.moe.d_model
        if d % cfg.n_heads:
            raise ValueError(f"n_heads={cfg.n_heads} must divide d_model={d}")
        self.cfg = cfg
        self.tok_emb = nn.Embedding(vocab_size, d)
        self.pos_emb = nn.Embedding(cfg.context, d)
        self.attn_norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(cfg.n_layers))
        self.attns = nn.ModuleList(CausalSelfAttention(d, cfg.n_heads) for _ in range(cfg.n_layers))
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(cfg.n_layers))
        self.ffns = nn.ModuleList(feed_forward(cfg) for _ in range(cfg.n_layers))
        self.norm_out = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab_size, bias=False)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, list[RoutingInfo]]:
        B, S = ids.shape
        if self.cfg.context < S:
            raise ValueError(f"sequence of {S} characters is longer than the model's context {self.cfg.context}")
        h = self.tok_emb(ids) + self.pos_emb(torch.arange(S, device=ids.device))  # (B, S, d)
        infos = []
        for an, attn, fn, ffn in zip(self.attn_norms, self.attns, self.ffn_norms, self.ffns, strict=True):
            h = h + attn(an(h))
            y, info = ffn(fn(h), token_ids=ids)
            h = h + y
            if info is not None:
                infos.append(info)
        return self.head(self.norm_out(h)), infos  # (B, S, vocab)


def moe_layers(model: nn.Module) -> list[MoELayer]:
    return [m for m in model.modules() if isinstance(m, MoELayer)]
