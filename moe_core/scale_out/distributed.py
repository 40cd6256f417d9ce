"""Expert parallelism over torch.distributed: experts sharded across ranks, tokens moved by all-to-all.

Data parallel + expert parallel, as in GShard (Lepikhin et al. 2020, arXiv:2006.16668) and Switch
(Fedus et al. 2021, arXiv:2101.03961): rank r holds a contiguous block of the global batch (shard_bounds)
and experts [r*E/W, (r+1)*E/W); router and shared experts are replicated. One forward, on every rank:

    1. route the local tokens (the same routers as MoELayer)             candidates: selected (token, slot) pairs
    2. counts    all-to-all  (W, 1+E/W) int64: my batch size, my candidates per expert of each rank
    3. keys      all-to-all  one int64 per candidate: its global order n = j*T + t (assign_slots' order)
       priorities            (overflow_policy="probability" only) the router probability of each candidate
    4. the OWNER of each expert applies capacity over the whole batch: it sorts every candidate it got
       with capacity.assign_slots, C = expert_capacity(T_global, E, k, cf), and keeps the first C
    5. keep      all-to-all  one byte per candidate back to its sender: kept or dropped
    6. dispatch  all-to-all  the kept tokens' rows (N, d)           (differentiable)
    7. the owner runs its local experts (SwiGLUExperts on rows grouped by expert)
    8. combine   all-to-all  the expert outputs back, reverse splits (differentiable)
    9. the sender weights each row by its gate and sums per token (index_add), as MoELayer does

Why the owner decides (step 4): MoELayer's capacity rule is global (every 1st choice before any 2nd
choice over the WHOLE batch, or by probability), so only a rank that sees every candidate of an expert can
apply it. GShard and DeepSpeed drop locally, per rank, with a per-rank capacity; that is cheaper (no keys)
but equals a single-process layer only run shard by shard. Here a dropped token is decided before its row
travels, so the dispatched bytes shrink with the capacity factor, as they do in those systems; only the
keys (8 bytes per candidate) and the keep flags (1 byte) pay for exactness.

Gradients: the dispatch and combine exchanges are an autograd.Function whose backward is the reverse
all-to-all (torch.distributed.nn.functional.all_to_all_single does the same but is deprecated in torch 2.13,
and we time and count each exchange). Router and shared-expert weights are replicated: after backward call
all_reduce_replicated_grads() (a SUM: the global loss is the sum of the ranks' losses). Each rank's expert
grads are the slice of the single-process layer's grads for its experts.

Every rank must call forward (and backward) the same number of times, even with zero tokens to send: the
exchanges are collectives. Auxiliary losses (load balance, z) need global counts and are not computed here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from moe_core.layer.capacity import assign_slots, expert_capacity
from moe_core.layer.config import MoEConfig
from moe_core.layer.experts import SwiGLU, SwiGLUExperts
from moe_core.layer.moe_layer import MoELayer
from moe_core.layer.routers import SigmoidBiasRouter, build_router

# routers that decide token by token (a shard of the batch routes like the whole batch would)
EP_ROUTERS = ("softmax_topk", "gshard_top2", "noisy_topk", "switch", "sigmoid_bias", "hash", "dense")
KEY_BYTES = 8  # int64 global order of a candidate
FLAG_BYTES = 1  # uint8 kept / dropped
COUNT_BYTES = 8  # int64 entries of the counts exchange


def check_world_size(n_experts: int, world_size: int) -> None:
    """Raise ValueError unless world_size ranks can hold n_experts experts evenly."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world size {world_size!r} is invalid: it must be a positive integer")
    if n_experts % world_size:
        divisors = [w for w in range(1, n_experts + 1) if n_experts % w == 0]
        raise ValueError(
            f"world size {world_size} does not divide n_experts={n_experts}: every rank must hold the same "
            f"number of experts; choose a world size among {divisors}"
        )


def check_router(router: str) -> None:
    if router not in EP_ROUTERS:
        raise ValueError(
            f"router {router!r} is not supported by expert parallelism: it decides over the whole batch, so a "
            f"shard of tokens cannot route alone; supported routers are {', '.join(EP_ROUTERS)}"
        )


def shard_bounds(n_tokens: int, world_size: int) -> list[tuple[int, int]]:
    """[start, stop) of each rank's contiguous block of the global batch (torch.tensor_split's split)."""
    base, extra = divmod(n_tokens, world_size)
    bounds, start = [], 0
    for r in range(world_size):
        stop = start + base + (1 if r < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


# -- the exchange, counted and timed ----------------------------------------------------------------------
@dataclass
class Exchange:
    """One all-to-all seen from one rank. Rows and bytes count only what crosses to or from OTHER ranks."""

    phase: str  # counts | keys | priorities | keep | dispatch | combine | combine.grad | dispatch.grad
    rows_sent: int
    rows_recv: int
    bytes_sent: int
    bytes_recv: int
    comm_s: float  # inside the all-to-all
    wait_s: float  # in a barrier just before it (only with ExchangeLog.split_wait): waiting for slower ranks


@dataclass
class ExchangeLog:
    """Attach to ExpertParallelMoE.log to record every exchange of the forward and backward passes."""

    split_wait: bool = False  # barrier before each exchange, so that waiting for peers is timed apart
    records: list[Exchange] = field(default_factory=list)

    def clear(self) -> None:
        self.records.clear()

    def total(self, attr: str) -> float:
        return sum(getattr(r, attr) for r in self.records)

    def by_phase(self) -> dict[str, tuple[int, int]]:
        """phase -> (bytes sent, bytes received), summed over the step."""
        out: dict[str, tuple[int, int]] = {}
        for r in self.records:
            s, v = out.get(r.phase, (0, 0))
            out[r.phase] = (s + r.bytes_sent, v + r.bytes_recv)
        return out


def all_to_all(
    x: torch.Tensor,
    out_splits: list[int],  # rows to receive from each rank
    in_splits: list[int],  # rows of x to send to each rank (x is grouped by destination)
    group: dist.ProcessGroup | None,
    log: ExchangeLog | None,
    phase: str,
) -> torch.Tensor:
    """Plain (not differentiable) all_to_all_single on dim 0 with uneven splits, counted into `log`."""
    out = x.new_empty((sum(out_splits), *x.shape[1:]))
    wait = 0.0
    if log is not None and log.split_wait:
        t0 = time.perf_counter()
        dist.barrier(group=group)
        wait = time.perf_counter() - t0
    t0 = time.perf_counter()
    dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
    comm = time.perf_counter() - t0
    if log is not None:
        me = dist.get_rank(group)
        row_bytes = x.shape[1:].numel() * x.element_size()
        sent = sum(in_splits) - in_splits[me]
        recv = sum(out_splits) - out_splits[me]
        log.records.append(Exchange(phase, sent, recv, sent * row_bytes, recv * row_bytes, comm, wait))
    return out


class _AllToAll(torch.autograd.Function):
    """all_to_all whose backward sends the gradient rows back where they came from (the reverse splits)."""

    @staticmethod
    def forward(ctx, x, out_splits, in_splits, group, log, phase):
        ctx.args = (out_splits, in_splits, group, log, phase)
        return all_to_all(x, out_splits, in_splits, group, log, phase)

    @staticmethod
    def backward(ctx, grad):
        out_splits, in_splits, group, log, phase = ctx.args
        return all_to_all(grad, in_splits, out_splits, group, log, phase + ".grad"), None, None, None, None, None


# -- the layer --------------------------------------------------------------------------------------------
@dataclass
class EPRoutingInfo:
    """One rank's view of a forward pass: its tokens' decisions and its experts' load."""

    expert_index: torch.Tensor  # (T_r, K) long: global expert of each slot of the local tokens
    combine_weights: torch.Tensor  # (T_r, K) weight applied to each slot, 0 where dropped or not selected
    selected: torch.Tensor  # (T_r, K) bool: a real assignment
    dropped: torch.Tensor  # (T_r, K) bool: selected but over its expert's capacity (decided by the owner)
    capacity: int | None  # C over the global batch, or None
    n_tokens_global: int  # T: tokens on all ranks together
    token_offset: int  # global index of this rank's first token
    tokens_per_expert: torch.Tensor  # (E/W,) long: candidates for this rank's experts, from all ranks
    kept_per_expert: torch.Tensor  # (E/W,) long: rows this rank's experts computed
    rows_to: torch.Tensor  # (W,) long: kept rows this rank dispatched to each rank (itself included)
    rows_from: torch.Tensor  # (W,) long: kept rows each rank dispatched to this one


class ExpertParallelMoE(nn.Module):
    """The MoELayer of `config` with its experts split over the ranks of `group` (default: the world).

    x (T_r, d) or (B, S, d): this rank's tokens -> (y of x's shape, EPRoutingInfo). The concatenation of
    the ranks' outputs equals MoELayer on the concatenated batch (same weights, same noise).
    """

    def __init__(self, config: MoEConfig, group: dist.ProcessGroup | None = None):
        super().__init__()
        check_router(config.router)
        self.group = group
        self.world_size = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        check_world_size(config.n_experts, self.world_size)
        self.config = config
        self.experts_per_rank = config.n_experts // self.world_size
        self.first_expert = self.rank * self.experts_per_rank
        self.router = build_router(config)  # replicated
        self.experts = SwiGLUExperts(self.experts_per_rank, config.d_model, config.expert_hidden)  # this shard
        hidden_shared = config.n_shared_experts * config.expert_hidden
        self.shared = SwiGLU(config.d_model, hidden_shared) if hidden_shared else None  # replicated
        self.log: ExchangeLog | None = None

    @classmethod
    def from_layer(cls, layer: MoELayer, group: dist.ProcessGroup | None = None) -> ExpertParallelMoE:
        """This rank's part of a single-process layer: its router and shared experts, its slice of experts."""
        ep = cls(layer.config, group).to(layer.experts.w_in.dtype)
        ep.train(layer.training)
        ep.router.load_state_dict(layer.router.state_dict())
        if ep.shared is not None:
            ep.shared.load_state_dict(layer.shared.state_dict())
        lo, hi = ep.first_expert, ep.first_expert + ep.experts_per_rank
        with torch.no_grad():
            ep.experts.w_in.copy_(layer.experts.w_in[lo:hi])
            ep.experts.w_out.copy_(layer.experts.w_out[lo:hi])
        return ep

    def forward(
        self, x: torch.Tensor, token_ids: torch.Tensor | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, EPRoutingInfo]:
        cfg, W, E_loc, me, group, log = (
            self.config, self.world_size, self.experts_per_rank, self.rank, self.group, self.log
        )
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (T_r, d)
        T_r = x.shape[0]
        dev = x.device

        # 1. route; candidates = selected (token, slot) pairs, slot-major (m = j*T_r + t), grouped by expert
        out = self.router(x, token_ids, noise)
        K = out.expert_index.shape[1]
        experts_flat = out.expert_index.t().reshape(-1)  # (K*T_r,)
        cand = torch.arange(K * T_r, device=dev)
        if out.selected is not None:
            cand = cand[out.selected.t().reshape(-1)]
        cand = cand[torch.sort(experts_flat[cand], stable=True).indices]  # (N,) by expert, then by m
        cand_expert = experts_flat[cand]  # (N,)
        per_expert = torch.bincount(cand_expert, minlength=cfg.n_experts).view(W, E_loc)  # (W, E/W)

        # 2. counts: my batch size and my candidates for each rank's experts
        header = torch.full((W, 1), T_r, dtype=torch.long, device=dev)
        counts = all_to_all(torch.cat([header, per_expert], 1), [1] * W, [1] * W, group, log, "counts")
        T_src = counts[:, 0].tolist()  # tokens on each rank
        recv_counts = counts[:, 1:]  # (W, E/W): candidates rank s sends to my experts
        T, offset = sum(T_src), sum(T_src[:me])
        send_splits = per_expert.sum(1).tolist()  # candidates to each rank
        recv_splits = recv_counts.sum(1).tolist()  # candidates from each rank

        # 3. keys: the global slot-major order n = j*T + t_global of assign_slots (and the priority)
        j, t = cand // T_r, cand % T_r
        keys = all_to_all(j * T + offset + t, recv_splits, send_splits, group, log, "keys")  # (M,)
        probability = cfg.overflow_policy == "probability" and out.priority is not None
        if probability:
            prio = all_to_all(out.priority.detach()[t, j], recv_splits, send_splits, group, log, "priorities")

        # 4. owner: capacity over the global batch, the same rule as MoELayer (assign_slots)
        local_expert = torch.arange(E_loc, device=dev).repeat(W).repeat_interleave(recv_counts.reshape(-1))
        order = torch.argsort(keys)  # (M,) candidates in global position order
        C = expert_capacity(T, cfg.n_experts, K, cfg.capacity_factor) if out.uses_capacity else out.capacity
        limit = C if out.uses_capacity else None
        slots = assign_slots(local_expert[order, None], E_loc, limit, None, prio[order, None] if probability else None)
        keep_recv = torch.empty_like(keys, dtype=torch.bool)
        keep_recv[order] = slots.kept[:, 0]

        # 5. keep flags back to the senders
        keep = all_to_all(keep_recv.to(torch.uint8), send_splits, recv_splits, group, log, "keep").bool()  # (N,)

        # 6. dispatch the kept rows
        sent = cand[keep]  # (S,) pairs whose rows travel, grouped by destination rank
        t_sent, j_sent = sent % T_r, sent // T_r
        rows_to = torch.bincount(cand_expert[keep] // E_loc, minlength=W)  # (W,)
        src = torch.arange(W, device=dev).repeat_interleave(torch.tensor(recv_splits, device=dev))  # (M,)
        rows_from = torch.bincount(src[keep_recv], minlength=W)  # (W,)
        to, frm = rows_to.tolist(), rows_from.tolist()
        x_recv = _AllToAll.apply(x[t_sent], frm, to, group, log, "dispatch")  # (R, d) by source, then expert

        # 7. local experts on rows grouped by expert
        e_recv = local_expert[keep_recv]  # (R,)
        perm = torch.sort(e_recv, stable=True).indices
        x_sorted = x_recv[perm]
        y_sorted = self.experts(x_sorted, torch.bincount(e_recv, minlength=E_loc))  # (R, d)
        if x_sorted.shape[0] == 0:  # no rows: keep x_recv (every rank runs dispatch's backward) and w_in
            y_sorted = y_sorted + 0 * (x_sorted.sum() + self.experts.w_in.sum())  # (zero grads, not None)
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(perm.numel(), device=dev)

        # 8. combine: outputs back to the senders, 9. weight and sum per token
        y_rows = _AllToAll.apply(y_sorted[inverse], to, frm, group, log, "combine")  # (S, d)
        w = out.gates[t_sent, j_sent]  # (S,)
        y = torch.zeros_like(x, dtype=y_rows.dtype).index_add(0, t_sent, y_rows * w.to(y_rows.dtype)[:, None])
        if self.shared is not None:
            y = y + self.shared(x)

        selected = out.selected if out.selected is not None else torch.ones_like(out.expert_index, dtype=torch.bool)
        kept_flat = torch.zeros(K * T_r, dtype=torch.bool, device=dev)
        kept_flat[sent] = True
        kept = kept_flat.view(K, T_r).t()  # (T_r, K)
        info = EPRoutingInfo(
            expert_index=out.expert_index.detach(),
            combine_weights=(out.gates * kept).detach(),
            selected=selected,
            dropped=selected & ~kept,
            capacity=C,
            n_tokens_global=T,
            token_offset=offset,
            tokens_per_expert=slots.tokens_per_expert,
            kept_per_expert=slots.kept_per_expert,
            rows_to=rows_to,
            rows_from=rows_from,
        )
        return y.to(x.dtype).reshape(shape), info

    @torch.no_grad()
    def all_reduce_replicated_grads(self) -> None:
        """Sum the router's and shared experts' grads over the ranks (call after backward, before the step)."""
        params = [p for m in (self.router, self.shared) if m is not None for p in m.parameters()]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, group=self.group)

    @torch.no_grad()
    def update_router_bias(self) -> None:
        """sigmoid_bias: sum the ranks' pending counts, then take the bias step; a no-op for other routers."""
        if isinstance(self.router, SigmoidBiasRouter):
            dist.all_reduce(self.router.pending_counts, group=self.group)
            self.router.update_bias()
