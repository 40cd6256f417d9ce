"""ep-bench: run the expert-parallel MoE layer on N local CPU processes and measure its exchanges.

    python -m moe_core.ep_bench --world-size 4 --experts 16 --top-k 2 --capacity-factor 1.25

prints, per rank and in total, the tokens and bytes each rank sends to and receives from the OTHER ranks
per step, the time in communication, waiting and compute, and the tokens dropped at its experts.

Three layers, from pure to measured:
  - traffic_matrix / implied_phases / implied_traffic: what a routing decision implies (no processes).
    Give it a single-process MoELayer's RoutingInfo; the app's "Scaling out" view and lesson 8 plot it.
  - launch: run fn(rank, world_size, ...) on N local processes in one gloo group (nccl on CUDA), with
    timeouts; a rank that raises takes the group down and the error names it (EPLaunchError).
  - measure_exchange / run_bench: the measured numbers of moe_core.distributed.ExpertParallelMoE.

A step is one training step of the layer: forward and backward, with the layer's input requiring grad as
it would inside a model (4 token-sized exchanges: dispatch, combine and their gradients). Router gradients
are not all-reduced inside the step (that is data parallelism, the same with or without experts).
Timing: before each exchange every rank waits at a barrier; that time is `wait` (a rank whose experts got
fewer tokens waits for the busiest), the exchange itself is `comm`, the rest of the step is `compute`.
With more ranks than cores the processes also wait for the CPU, which shows up everywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException, ProcessExitedException

from moe_core.config import MoEConfig
from moe_core.distributed import (
    COUNT_BYTES,
    FLAG_BYTES,
    KEY_BYTES,
    ExchangeLog,
    ExpertParallelMoE,
    check_router,
    check_world_size,
    shard_bounds,
)
from moe_core.layer import MoELayer, RoutingInfo

MAX_WORLD_SIZE = 64
TOKEN_PHASES = ("dispatch", "combine")
GRAD_PHASES = ("combine.grad", "dispatch.grad")  # backward runs the exchanges in reverse order


# -- what the routing implies ------------------------------------------------------------------------------
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
            experts=_expert_range(r, E // W),
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


def _expert_range(rank: int, per_rank: int) -> str:
    lo = rank * per_rank
    return f"{lo}" if per_rank == 1 else f"{lo}-{lo + per_rank - 1}"


# -- the launcher ------------------------------------------------------------------------------------------
class EPLaunchError(RuntimeError):
    """A rank failed, or the group ran past its deadline. The message names the rank and its error."""


def launch(
    fn: Callable[..., Any],
    world_size: int,
    args: tuple = (),
    backend: str = "gloo",
    timeout_s: float = 60.0,  # process-group timeout: init and every collective
    deadline_s: float = 600.0,  # the whole run
    threads: int | None = None,  # intra-op threads per rank; None = the CPUs shared out, at least 1
) -> list[Any]:
    """Run fn(rank, world_size, *args) in world_size local processes joined in one process group.

    Returns fn's results by rank. fn and args must be picklable (module-level). Processes start from a
    forkserver that imported torch once (fast: ~0.1 s per launch after the first), or spawn where there is
    no forkserver. If a rank raises, torch stops the others and EPLaunchError names the first rank that
    failed for a reason of its own (not a peer's disappearance); a collective that waits longer than
    timeout_s raises in the waiting rank, and after deadline_s every rank still running is stopped.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world size {world_size!r} is invalid: it must be a positive integer")
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    if method == "forkserver":  # only takes effect before the forkserver's first start
        mp.set_forkserver_preload(["torch", "torch.distributed", "pandas", "moe_core.distributed"])
    with tempfile.TemporaryDirectory(prefix="ep-launch-") as tmp, _without_main_module():
        ctx = mp.start_processes(
            _run_rank, args=(world_size, tmp, backend, timeout_s, threads, fn, args), nprocs=world_size, join=False,
            start_method=method,
        )
        deadline = time.monotonic() + deadline_s
        spawn_log = logging.getLogger("torch.multiprocessing.spawn")
        level = spawn_log.level
        spawn_log.setLevel(logging.ERROR)  # not "Terminating process ..." on a failure: our error names the rank
        try:
            while not ctx.join(timeout=0.1):
                if time.monotonic() > deadline:
                    alive = [r for r, p in enumerate(ctx.processes) if p.is_alive()]
                    raise EPLaunchError(
                        f"the process group did not finish within {deadline_s:g} s; {_ranks(alive)} "
                        f"{'was' if len(alive) == 1 else 'were'} still running and stopped"
                    )
        except ProcessException as e:
            # give the other ranks a moment to finish and write their own reports: the rank that raised may
            # be a little slower to report than a peer that noticed its socket close
            settle = time.monotonic() + 5.0
            for p in ctx.processes:
                p.join(timeout=max(0.0, settle - time.monotonic()))
            raise EPLaunchError(_diagnose(tmp, world_size, timeout_s, e)) from None
        finally:  # on any way out (error, deadline, Ctrl-C) no rank outlives the launch
            _stop(ctx.processes)
            spawn_log.setLevel(level)
        return [torch.load(os.path.join(tmp, f"result{r}.pt"), weights_only=False) for r in range(world_size)]


@contextlib.contextmanager
def _without_main_module():
    """Start ranks without re-running the parent's __main__ in them. spawn/forkserver children import the
    parent's main script; when that is a Streamlit page, a notebook or a test runner's AppTest script it
    fails there (or does work twice). The ranks need only moe_core and fn's own module."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")  # no __file__: nothing to re-run
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _run_rank(rank: int, world_size: int, tmp: str, backend: str, timeout_s: float, threads, fn, args) -> None:
    try:
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // world_size))
        if backend == "nccl":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        dist.init_process_group(
            backend, init_method="file://" + os.path.join(tmp, "store"), rank=rank, world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
        try:
            result = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        torch.save(result, os.path.join(tmp, f"result{rank}.pt"))
    except BaseException as e:
        report = dict(
            rank=rank, time=time.time(), error=f"{type(e).__name__}: {_first_line(str(e))}",
            peer=isinstance(e, dist.DistError) or "gloo" in str(e).lower() or "nccl" in str(e).lower(),
            traceback=traceback.format_exc(),
        )
        with open(os.path.join(tmp, f"error{rank}.json"), "w") as f:
            json.dump(report, f)
        raise


def _first_line(msg: str, limit: int = 300) -> str:
    line = next((s.strip() for s in msg.splitlines() if s.strip()), "")
    line = re.sub(r"^\[[^\]]*\]\s*", "", line)  # gloo's "[/path/to/file.cc:78] " prefix
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _diagnose(tmp: str, world_size: int, timeout_s: float, e: ProcessException) -> str:
    reports = []
    for r in range(world_size):
        path = os.path.join(tmp, f"error{r}.json")
        if os.path.exists(path):
            with open(path) as f:
                reports.append(json.load(f))
    if not reports:  # killed by a signal or os._exit: no Python error to show
        how = f"exit code {e.exit_code}" if isinstance(e, ProcessExitedException) else _first_line(str(e))
        return f"rank {e.error_index} of {world_size} died ({how})"
    reports.sort(key=lambda rep: (rep["peer"], rep["time"]))  # an error of its own first, then the earliest
    root = reports[0]
    silent = sorted(set(range(world_size)) - {rep["rank"] for rep in reports if rep["peer"]} - {root["rank"]})
    if root["peer"] and silent:  # nobody failed on its own: someone stopped answering
        return (f"{_ranks(silent)} stopped responding: rank {root['rank']} of {world_size} gave up waiting "
                f"(timeout {timeout_s:g} s): {root['error']}")
    where = " in a collective (a peer left it or never came)" if root["peer"] else ""
    msg = f"rank {root['rank']} of {world_size} failed{where}: {root['error']}"
    own = sorted(rep["rank"] for rep in reports[1:] if not rep["peer"])
    lost = sorted(rep["rank"] for rep in reports[1:] if rep["peer"])
    if own:
        msg += f"; {_ranks(own)} failed too"
    if lost:
        msg += f"; {_ranks(lost)} then lost {'their' if len(lost) > 1 else 'its'} peers"
    return msg


def _ranks(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))


def _stop(processes) -> None:
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()


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
        rows.append(dict(rank=r, experts=_expert_range(r, E // W), **{k: float(v) for k, v in mean.items()}))
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
    raise SystemExit(main())
