"""What a routing decision implies for expert parallelism on W devices, computed without any processes.

Experts are split in contiguous blocks of E/W per rank and tokens in contiguous blocks (shard_bounds), as in
moe_core.scale_out.distributed.ExpertParallelMoE. From one single-process RoutingInfo this gives, per rank, the
(token, slot) pairs and bytes each exchange of a training step would move, the tokens dropped at its experts
and the rows its experts compute. The app's "Scaling out" view and lesson 8 plot it; ep-bench
(moe_core/scale_out/ep_bench.py) measures the same exchanges on real processes and its tests compare the two.
"""

from __future__ import annotations

import pandas as pd
import torch

from moe_core.layer.config import MoEConfig
from moe_core.layer.moe_layer import RoutingInfo
from moe_core.scale_out.distributed import (
    COUNT_BYTES,
    FLAG_BYTES,
    KEY_BYTES,
    check_router,
    check_world_size,
    shard_bounds,
)


def traffic_matrix(
    expert_index: torch.Tensor,  # (T, K) long: global routing of the global batch
    kept: torch.Tensor,  # (T, K) bool: kept after capacity
    world_size: int,
    n_experts: int,
    selected: torch.Tensor | None = None,  # (T, K) bool; None = every slot is a real choice
) -> tuple[torch.Tensor, torch.Tensor]:
    """(candidates, kept) as (W, W) long matrices: [s, o] = (token, slot) pairs of rank s's tokens for
    experts on rank o, before and after capacity. Tokens are split in contiguous blocks (shard_bounds)."""
    check_world_size(n_experts, world_size)
    T, K = expert_index.shape
    sizes = torch.tensor([b - a for a, b in shard_bounds(T, world_size)])
    src = torch.repeat_interleave(torch.arange(world_size), sizes)[:, None].expand(T, K)  # (T, K)
    pair = src * world_size + expert_index.cpu() // (n_experts // world_size)  # (T, K) flat (s, o)
    sel = torch.ones_like(kept, dtype=torch.bool) if selected is None else selected.cpu()
    cand = torch.bincount(pair[sel], minlength=world_size**2).view(world_size, world_size)
    kept_m = torch.bincount(pair[kept.cpu() & sel], minlength=world_size**2).view(world_size, world_size)
    return cand, kept_m


def implied_phases(
    cand: torch.Tensor,  # (W, W) from traffic_matrix
    kept: torch.Tensor,  # (W, W)
    n_experts: int,
    d_model: int,
    elem_bytes: int = 4,  # bytes per activation element (float32)
    priority_bytes: int = 0,  # bytes per router priority; 0 unless overflow_policy="probability"
    backward: bool = True,
) -> list[dict[str, tuple[int, int]]]:
    """Per rank, phase -> (bytes sent to other ranks, bytes received from them), as ExchangeLog.by_phase()."""
    W = cand.shape[0]
    off = ~torch.eye(W, dtype=torch.bool)
    c_out, c_in = (cand * off).sum(1).tolist(), (cand * off).sum(0).tolist()
    k_out, k_in = (kept * off).sum(1).tolist(), (kept * off).sum(0).tolist()
    row, counts = d_model * elem_bytes, (W - 1) * (n_experts // W + 1) * COUNT_BYTES
    out = []
    for r in range(W):
        phases = {"counts": (counts, counts), "keys": (c_out[r] * KEY_BYTES, c_in[r] * KEY_BYTES)}
        if priority_bytes:
            phases["priorities"] = (c_out[r] * priority_bytes, c_in[r] * priority_bytes)
        phases["keep"] = (c_in[r] * FLAG_BYTES, c_out[r] * FLAG_BYTES)
        phases["dispatch"] = (k_out[r] * row, k_in[r] * row)
        phases["combine"] = (k_in[r] * row, k_out[r] * row)
        if backward:
            phases["combine.grad"] = (k_out[r] * row, k_in[r] * row)
            phases["dispatch.grad"] = (k_in[r] * row, k_out[r] * row)
        out.append(phases)
    return out


def priority_bytes_of(config: MoEConfig, elem_bytes: int) -> int:
    """Bytes per exchanged router priority: only overflow_policy="probability" with a scoring router."""
    if config.overflow_policy != "probability" or config.router in ("hash", "dense"):
        return 0
    return 8 if elem_bytes == 8 else 4  # routers compute in float32, float64 stays float64


def implied_traffic(
    info: RoutingInfo, config: MoEConfig, world_size: int, elem_bytes: int = 4, backward: bool = True
) -> pd.DataFrame:
    """Per rank, what a single-process routing decision implies for expert parallelism on world_size ranks.

    Columns: tokens (local batch), tokens_sent / tokens_recv (kept rows dispatched to / from other ranks),
    tokens_local (kept rows for its own experts), dropped (slots over capacity at its experts), expert_rows
    (rows its experts compute), bytes_sent / bytes_recv (every exchange of one step, backward included if
    asked), modeled_wait (share of the step a rank idles if compute time is proportional to expert_rows).
    """
    check_router(config.router)
    kept = info.selected & ~info.dropped
    cand, kept_m = traffic_matrix(info.expert_index, kept, world_size, config.n_experts, info.selected)
    phases = implied_phases(cand, kept_m, config.n_experts, config.d_model, elem_bytes,
                            priority_bytes_of(config, elem_bytes), backward)
    return _frame(world_size, config.n_experts, info.n_tokens, cand, kept_m, phases)


def _frame(W: int, E: int, T: int, cand: torch.Tensor, kept: torch.Tensor, phases: list[dict]) -> pd.DataFrame:
    off = ~torch.eye(W, dtype=torch.bool)
    expert_rows = kept.sum(0)
    busiest = max(int(expert_rows.max()), 1)
    rows = []
    for r, (a, b) in enumerate(shard_bounds(T, W)):
        rows.append(dict(
            rank=r,
            experts=expert_range(r, E // W),
            tokens=b - a,
            tokens_sent=int((kept * off)[r].sum()),
            tokens_recv=int((kept * off)[:, r].sum()),
            tokens_local=int(kept[r, r]),
            dropped=int(cand[:, r].sum() - kept[:, r].sum()),
            expert_rows=int(expert_rows[r]),
            bytes_sent=sum(s for s, _ in phases[r].values()),
            bytes_recv=sum(v for _, v in phases[r].values()),
            modeled_wait=1.0 - int(expert_rows[r]) / busiest,
        ))
    return pd.DataFrame(rows)


def expert_range(rank: int, per_rank: int) -> str:
    lo = rank * per_rank
    return f"{lo}" if per_rank == 1 else f"{lo}-{lo + per_rank - 1}"
