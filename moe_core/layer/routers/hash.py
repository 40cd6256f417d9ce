"""Hash routing (Roller, Sukhbaatar, Szlam & Weston 2021, "Hash Layers For Large Sparse Models",
arXiv:2106.04426): a fixed random table sends each token id to its experts. Nothing is learned.

    bucket = token_id mod N_BUCKETS          (language models pass character ids)
    experts = TABLE[bucket]                   k distinct experts per bucket, drawn once from seed 42
    y = (1/k) * sum of those experts' outputs

Roller et al. send each token to one expert with no gate weight (k = 1 here); k > 1 with equal weights 1/k is
this app's extension, so that hashing can be compared with the other routers at the same k.

Without token ids (plain vectors, e.g. the 2-D playground passes a grid-cell id instead) the bucket is a
locality-sensitive hash of x: the sign pattern of 12 fixed random projections. There is no router
gradient, no balancing loss and no capacity: a hash table never drops a token.
"""

from __future__ import annotations

import torch

from moe_core.layer.routers.base import Router, RouterOutput, router_dtype

N_BUCKETS = 4096
N_PROJECTIONS = 12  # 2**12 = N_BUCKETS sign patterns
TABLE_SEED = 42  # ParlAI's HashLayerFFN seeds its table with random.seed(42)


class HashRouter(Router):
    def __init__(self, config):
        super().__init__(config)
        g = torch.Generator().manual_seed(TABLE_SEED)
        scores = torch.rand(N_BUCKETS, config.n_experts, generator=g)
        self.register_buffer("table", scores.argsort(dim=-1)[:, : config.top_k].contiguous())  # (B, k)
        self.register_buffer("projection", torch.randn(config.d_model, N_PROJECTIONS, generator=g))  # (d, P)
        self.register_buffer("powers", 2 ** torch.arange(N_PROJECTIONS))  # (P,)

    def buckets(self, x: torch.Tensor, token_ids: torch.Tensor | None) -> torch.Tensor:
        if token_ids is not None:
            return token_ids.reshape(-1).long() % N_BUCKETS  # (T,)
        bits = (x.to(self.projection.dtype) @ self.projection > 0).long()  # (T, P)
        return (bits * self.powers).sum(dim=-1)  # (T,)

    def forward(self, x, token_ids=None, noise=None) -> RouterOutput:
        T, E, k = x.shape[0], self.config.n_experts, self.config.top_k
        index = self.table[self.buckets(x, token_ids)]  # (T, k)
        gates = torch.full((T, k), 1.0 / k, device=x.device, dtype=router_dtype(x))  # (T, k)
        probs = torch.zeros(T, E, device=x.device, dtype=gates.dtype).scatter(1, index, gates)  # (T, E)
        return RouterOutput(
            logits=torch.zeros_like(probs),  # no learned scores
            probs=probs,
            expert_index=index,
            gates=gates,
            uses_capacity=False,
        )
