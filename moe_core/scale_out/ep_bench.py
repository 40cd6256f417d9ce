"""ep-bench: run the expert-parallel MoE layer on N local CPU processes and measure its exchanges.

    python -m moe_core.scale_out.ep_bench --world-size 4 --experts 16 --top-k 2 --capacity-factor 1.25

prints, per rank and in total, the tokens and bytes each rank sends to and receives from the OTHER ranks
per step, the time in communication, waiting and compute, and the tokens dropped at its experts.

Three layers, from pure to measured, one module each:
  - moe_core/scale_out/ep_traffic.py, traffic_matrix / implied_phases / implied_traffic: what a routing decision implies
    (no processes). Give it a single-process MoELayer's RoutingInfo; the app's "Scaling out" view and lesson 8
    plot it.
  - moe_core/scale_out/ep_launch.py, launch: run fn(rank, world_size, ...) on N local processes in one process
    group, with timeouts; a rank that raises takes the group down and the error names it (EPLaunchError).
  - here, measure_exchange / run_bench: the measured numbers of moe_core.scale_out.distributed.ExpertParallelMoE.

A step is one training step of the layer: forward and backward, with the layer's input requiring grad as
it would inside a model (4 token-sized exchanges: dispatch, combine and their gradients). Router gradients
are not all-reduced inside the step (that is data parallelism, the same with or without experts).
Timing: before each exchange every rank waits at a barrier; that time is `wait` (a rank whose experts got
fewer tokens waits for the busiest), the exchange itself is `comm`, the rest of the step is `compute`.
With more ranks than cores the processes also wait for the CPU, which shows up everywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist

from moe_core.layer.config import MoEConfig
from moe_core.layer.moe_layer import MoELayer
from moe_core.scale_out.distributed import (
    ExchangeLog,
    ExpertParallelMoE,
    check_router,
    check_world_size,
    shard_bounds,
)
from moe_core.scale_out.ep_launch import EPLaunchError, launch
from moe_core.scale_out.ep_traffic import expert_range

MAX_WORLD_SIZE = 64


# -- the benchmark -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchSpec:
    config: MoEConfig
    world_size: int = 2  # local processes, each one rank holding E/W experts
    tokens: int = 4096  # global tokens per step, split in contiguous blocks over the ranks
    steps: int = 10  # measured steps
    warmup: int = 1  # steps run first and not measured
    seed: int = 0  # weights and inputs (all ranks build the same global layer and batch)
    skew: float = 0.0  # added to the router logits of rank 0's experts: imbalance, and ranks waiting
    backward: bool = True  # a step is forward + backward; False: forward only
    fail_rank: int | None = None  # fault injection: this rank raises in the middle of the first step
    timeout_s: float = 60.0  # process-group timeout (init and each collective)
    threads: int | None = None  # intra-op threads per rank; None = the CPUs shared out over the ranks

    def validate(self) -> None:
        check_router(self.config.router)
        if isinstance(self.world_size, bool) or not isinstance(self.world_size, int) or not (
            1 <= self.world_size <= MAX_WORLD_SIZE
        ):
            raise ValueError(f"world size {self.world_size!r} is out of range: allowed 1 to {MAX_WORLD_SIZE}")
        check_world_size(self.config.n_experts, self.world_size)
        if self.tokens < self.world_size:
            raise ValueError(f"tokens={self.tokens} is fewer than the world size {self.world_size}: each rank "
                             "needs at least one token")
        if self.steps < 1 or self.warmup < 0:
            raise ValueError(f"steps={self.steps}, warmup={self.warmup}: need steps >= 1 and warmup >= 0")
        if self.skew and self.config.router == "hash":
            raise ValueError("skew needs a learned router (it biases router logits); 'hash' has none")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads={self.threads} must be at least 1")
        if self.fail_rank is not None and not 0 <= self.fail_rank < self.world_size:
            raise ValueError(f"fail rank {self.fail_rank} is not a rank of a world of size {self.world_size}")


def bench_layer(spec: BenchSpec) -> MoELayer:
    """The single-process layer every rank slices its part from (seeded; skew biases rank 0's experts)."""
    torch.manual_seed(spec.seed)
    layer = MoELayer(spec.config)
    if spec.skew:
        with torch.no_grad():  # x[:, 0] = 1 (bench_batch), so the logits of rank 0's experts gain `skew`
            layer.router.weight[:, 0] = 0.0
            layer.router.weight[: spec.config.n_experts // spec.world_size, 0] = spec.skew
    return layer


def bench_batch(spec: BenchSpec, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The global batch of one step (T, d) and the router noise it uses (noisy_topk or jitter), seeded."""
    cfg = spec.config
    g = torch.Generator().manual_seed(spec.seed * 1_000_003 + step + 1)
    x = torch.randn(spec.tokens, cfg.d_model, generator=g)
    if spec.skew:
        x[:, 0] = 1.0
    noise = None
    if cfg.router == "noisy_topk":
        noise = torch.randn(spec.tokens, cfg.n_experts, generator=g)
    elif cfg.router_noise:
        eps = cfg.router_noise
        noise = 1 - eps + 2 * eps * torch.rand(spec.tokens, cfg.d_model, generator=g)
    return x, noise


def _bench_worker(rank: int, world_size: int, spec: BenchSpec) -> list[dict[str, Any]]:
    ep = ExpertParallelMoE.from_layer(bench_layer(spec))
    ep.log = log = ExchangeLog(split_wait=True)
    lo, hi = shard_bounds(spec.tokens, world_size)[rank]
    records = []
    for step in range(spec.warmup + spec.steps):
        x, noise = bench_batch(spec, step)
        x = x[lo:hi].requires_grad_(spec.backward)  # as inside a model: the input needs its gradient
        noise = None if noise is None else noise[lo:hi]
        log.clear()
        ep.zero_grad(set_to_none=True)
        dist.barrier()
        t0 = time.perf_counter()
        y, info = ep(x, noise=noise)
        if spec.fail_rank == rank:
            raise RuntimeError(f"injected failure on rank {rank} (--fail-rank {rank}) after the forward pass")
        if spec.backward:
            y.sum().backward()
        step_s = time.perf_counter() - t0
        if step < spec.warmup:
            continue
        dispatch = next(r for r in log.records if r.phase == "dispatch")
        comm, wait = log.total("comm_s"), log.total("wait_s")
        records.append(dict(
            step=step, tokens=hi - lo, tokens_sent=dispatch.rows_sent, tokens_recv=dispatch.rows_recv,
            tokens_local=int(info.rows_to[rank]),
            dropped=int((info.tokens_per_expert - info.kept_per_expert).sum()),
            expert_rows=int(info.kept_per_expert.sum()),
            bytes_sent=int(log.total("bytes_sent")), bytes_recv=int(log.total("bytes_recv")),
            phases={k: list(v) for k, v in log.by_phase().items()},
            comm_ms=1e3 * comm, wait_ms=1e3 * wait, compute_ms=1e3 * (step_s - comm - wait), step_ms=1e3 * step_s,
            capacity=info.capacity,
        ))
    return records


def run_bench(spec: BenchSpec) -> dict[str, Any]:
    """Launch the benchmark; returns per-step records by rank, per-rank means and totals (JSON-ready)."""
    spec.validate()
    threads = spec.threads or max(1, (os.cpu_count() or 1) // spec.world_size)
    per_rank = launch(_bench_worker, spec.world_size, (spec,), timeout_s=spec.timeout_s, threads=threads)
    frame = summarize(per_rank, spec)
    numeric = frame.drop(columns=["experts"])
    total = {c: float(numeric[c].sum()) for c in ("tokens", "tokens_sent", "tokens_recv", "tokens_local",
                                                   "dropped", "expert_rows", "bytes_sent", "bytes_recv")}
    for c in ("comm_ms", "wait_ms", "compute_ms"):
        total[c] = float(numeric[c].mean())  # the ranks run side by side: their mean, not their sum
    total["step_ms"] = float(numeric["step_ms"].max())  # a step lasts as long as its slowest rank
    steps = [[{k: rec[k] for k in ("tokens_sent", "tokens_recv", "tokens_local", "dropped", "phases")}
              for rec in (recs[i] for recs in per_rank)] for i in range(spec.steps)]
    return dict(
        config=spec.config.to_dict(),
        bench={**{k: v for k, v in asdict(spec).items() if k != "config"}, "threads": threads,
               "cpus": os.cpu_count()},
        capacity=per_rank[0][0]["capacity"],
        ranks=frame.to_dict(orient="records"),
        total=total,
        per_step=steps,
    )


def summarize(per_rank: list[list[dict[str, Any]]], spec: BenchSpec) -> pd.DataFrame:
    """Per-rank means over the measured steps."""
    E, W = spec.config.n_experts, spec.world_size
    rows = []
    for r, recs in enumerate(per_rank):
        df = pd.DataFrame([{k: v for k, v in rec.items() if k not in ("phases", "capacity")} for rec in recs])
        mean = df.drop(columns=["step"]).mean()
        rows.append(dict(rank=r, experts=expert_range(r, E // W), **{k: float(v) for k, v in mean.items()}))
    return pd.DataFrame(rows)


def measure_exchange(
    config: MoEConfig, world_size: int, tokens: int = 1024, steps: int = 3, seed: int = 0, skew: float = 0.0,
    backward: bool = True,
) -> pd.DataFrame:
    """Measured per-rank means (tokens, bytes, dropped, comm/wait/compute ms) of ExpertParallelMoE on
    world_size local processes (a few seconds for world size 1-4). For the app; implied_traffic is the
    instant, process-free counterpart for the counts and bytes."""
    spec = BenchSpec(config=config, world_size=world_size, tokens=tokens, steps=steps, seed=seed, skew=skew,
                     backward=backward)
    return pd.DataFrame(run_bench(spec)["ranks"])


# -- command line --------------------------------------------------------------------------------------------
class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints the whole usage block)
        raise _UsageError(message)


def _capacity(text: str) -> float | None:
    if text.lower() in ("none", "dropless"):
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'none'") from None


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ep-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--world-size", type=int, default=2, help="local processes (ranks); must divide --experts")
    p.add_argument("--experts", type=int, default=8, help="routed experts E")
    p.add_argument("--top-k", type=int, default=2, help="experts per token k")
    p.add_argument("--capacity-factor", type=_capacity, default=1.25, help="C = ceil(cf*k*T/E); 'none' = dropless")
    p.add_argument("--router", default="softmax_topk", help="softmax_topk, switch, noisy_topk, sigmoid_bias, ...")
    p.add_argument("--overflow-policy", default="position", help="position | probability")
    p.add_argument("--tokens", type=int, default=4096, help="global tokens per step (split over the ranks)")
    p.add_argument("--d-model", type=int, default=256, help="token width d")
    p.add_argument("--hidden", type=int, default=512, help="hidden width h of each SwiGLU expert")
    p.add_argument("--steps", type=int, default=10, help="measured steps")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured steps first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skew", type=float, default=0.0, help="added to the router logits of rank 0's experts")
    p.add_argument("--forward-only", action="store_true", help="measure the forward pass only")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a rank may wait in a collective")
    p.add_argument("--threads", type=int, default=None, help="torch threads per rank (default: CPUs / ranks)")
    p.add_argument("--fail-rank", type=int, default=None, help="fault injection: this rank raises mid-step")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def parse_spec(argv: list[str] | None = None) -> tuple[BenchSpec, bool]:
    """(BenchSpec, json?) from command-line flags; raises _UsageError or ValueError with one clear line."""
    a = _parser().parse_args(argv)
    config = MoEConfig(
        d_model=a.d_model, n_experts=a.experts, top_k=a.top_k, expert_hidden=a.hidden,
        capacity_factor=a.capacity_factor, router=a.router, overflow_policy=a.overflow_policy,
    )
    spec = BenchSpec(config=config, world_size=a.world_size, tokens=a.tokens, steps=a.steps, warmup=a.warmup,
                     seed=a.seed, skew=a.skew, backward=not a.forward_only, fail_rank=a.fail_rank,
                     timeout_s=a.timeout, threads=a.threads)
    if a.timeout <= 0:
        raise ValueError(f"timeout={a.timeout} must be positive")
    spec.validate()
    return spec, a.json


def format_report(result: dict[str, Any]) -> str:
    cfg, b, total = result["config"], result["bench"], result["total"]
    W, E = b["world_size"], cfg["n_experts"]
    cap = "dropless" if result["capacity"] is None else f"cf={cfg['capacity_factor']:g} -> C={result['capacity']}"
    lines = [
        f"ep-bench: {cfg['router']}, {E} experts on {W} rank(s) ({E // W} each), k={cfg['top_k']}, {cap}, "
        f"{b['tokens']} tokens/step, d={cfg['d_model']}, h={cfg['expert_hidden']}, float32, "
        f"{'forward+backward' if b['backward'] else 'forward only'}, mean of {b['steps']} "
        f"step{'s' * (b['steps'] != 1)}, gloo, {b['threads']} thread(s) per rank on {b['cpus']} CPUs"
        + (f", skew={b['skew']:g}" if b["skew"] else ""),
        "per step: sent / recv / MB count kept token rows and bytes crossing to or from OTHER ranks (MB = 1e6 B, "
        "every exchange); local = rows for the rank's own experts; dropped = slots over capacity at its experts",
        f"{'rank':>5} {'experts':>8} {'tokens':>7} {'sent':>7} {'recv':>7} {'local':>7} {'MB sent':>8} "
        f"{'MB recv':>8} {'dropped':>8} {'comm ms':>8} {'wait ms':>8} {'compute ms':>10}",
    ]

    def row(name: str, experts: str, r: dict[str, float]) -> str:
        return (f"{name:>5} {experts:>8} {r['tokens']:>7.0f} {r['tokens_sent']:>7.0f} {r['tokens_recv']:>7.0f} "
                f"{r['tokens_local']:>7.0f} {r['bytes_sent'] / 1e6:>8.3f} {r['bytes_recv'] / 1e6:>8.3f} "
                f"{r['dropped']:>8.1f} {r['comm_ms']:>8.2f} {r['wait_ms']:>8.2f} {r['compute_ms']:>10.2f}")

    lines += [row(str(r["rank"]), r["experts"], r) for r in result["ranks"]]
    lines.append(row("total", f"0-{E - 1}", total))
    lines.append(f"(total: sums of tokens, bytes and drops; mean of the ranks' times; "
                 f"step time of the slowest rank {total['step_ms']:.2f} ms)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        spec, as_json = parse_spec(argv)
    except SystemExit as e:  # --help
        return e.code if isinstance(e.code, int) else 0
    except (_UsageError, ValueError) as e:
        print(f"ep-bench: error: {e}", file=sys.stderr)
        return 2
    try:
        result = run_bench(spec)
    except EPLaunchError as e:
        print(f"ep-bench: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1) if as_json else format_report(result))
    return 0


if __name__ == "__main__":
    # run the imported moe_core.scale_out.ep_bench, not this __main__ copy: the ranks unpickle _bench_worker by
    # module name
    from moe_core.scale_out.ep_bench import main as _main

    raise SystemExit(_main())
