"""Expert parallelism on local gloo processes against the single-process MoELayer, and ep-bench's numbers.

The ranks are real processes (ep_launch.launch: a forkserver, a FileStore rendezvous in a temporary
directory, 60 s collective timeouts). One launch per world size runs every case, so the file stays fast.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from moe_core import MoEConfig, MoELayer
from moe_core.scale_out import ep_bench as eb
from moe_core.scale_out import ep_launch, ep_traffic
from moe_core.scale_out.distributed import ExpertParallelMoE, check_world_size, shard_bounds

BASE = dict(d_model=12, n_experts=8, expert_hidden=8)
CASES = [  # (name, config fields, T, dtype)
    ("topk2-dropless", dict(router="softmax_topk", top_k=2), 24, "float64"),
    ("topk2-cf1-position", dict(router="softmax_topk", top_k=2, capacity_factor=1.0), 24, "float64"),
    ("topk2-cf0.5-probability", dict(router="softmax_topk", top_k=2, capacity_factor=0.5,
                                     overflow_policy="probability"), 24, "float64"),
    ("topk3-cf0.75-uneven-shared", dict(router="softmax_topk", top_k=3, capacity_factor=0.75, normalize_topk=False,
                                        n_shared_experts=1), 22, "float64"),
    ("switch-jitter-dropless", dict(router="switch", top_k=1, router_noise=0.01), 24, "float64"),
    ("switch-cf0.75-position", dict(router="switch", top_k=1, capacity_factor=0.75), 24, "float64"),
    ("switch-cf1-probability", dict(router="switch", top_k=1, capacity_factor=1.0,
                                    overflow_policy="probability"), 24, "float64"),
    ("topk2-skewed-cf1", dict(router="softmax_topk", top_k=2, capacity_factor=1.0), 24, "skew"),
    ("topk2-float32-grouped", dict(router="softmax_topk", top_k=2, capacity_factor=1.25, d_model=16), 32, "float32"),
    ("noisy-topk-cf1", dict(router="noisy_topk", top_k=2, capacity_factor=1.0), 24, "float64"),
    ("gshard-top2-cf0.75", dict(router="gshard_top2", top_k=2, capacity_factor=0.75), 24, "float64"),
    ("sigmoid-bias-cf1", dict(router="sigmoid_bias", top_k=2, capacity_factor=1.0), 24, "float64"),
    ("hash", dict(router="hash", top_k=2), 24, "float64"),
    ("dense", dict(router="dense", top_k=1), 24, "float64"),
]


def _case(case: tuple) -> tuple[MoELayer, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The global layer, batch, router noise and backward probe of a case (the same in every process)."""
    _, fields, T, kind = case
    cfg = MoEConfig(**{**BASE, **fields})
    dtype = torch.float32 if kind == "float32" else torch.float64
    torch.manual_seed(0)
    layer = MoELayer(cfg).to(dtype)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        if cfg.router == "noisy_topk":  # zero-initialized in tensor2tensor; random weights avoid ties
            layer.router.weight.normal_(0, 0.5, generator=g)
            layer.router.noise_weight.normal_(0, 0.5, generator=g)
        if cfg.router == "gshard_top2":  # a confident router: the draws reject some 2nd experts
            layer.router.weight.normal_(0, 1.0, generator=g)
        if cfg.router == "sigmoid_bias":
            layer.router.bias.copy_(torch.linspace(-0.3, 0.3, cfg.n_experts))
        if kind == "skew":  # every token prefers experts 0 and 1: the other ranks' experts get nothing
            layer.router.weight.normal_(0, 0.1, generator=g)
            layer.router.weight[:2, 0] = 5.0
    x = torch.randn(T, cfg.d_model, generator=g, dtype=dtype)
    if kind == "skew":
        x[:, 0] = 1.0
    noise = None
    if cfg.router == "noisy_topk":
        noise = torch.randn(T, cfg.n_experts, generator=g, dtype=dtype)
    elif cfg.router == "gshard_top2":  # the uniforms that decide each token's 2nd expert
        noise = torch.rand(T, generator=g, dtype=dtype)
    elif cfg.router_noise:
        noise = 1 - cfg.router_noise + 2 * cfg.router_noise * torch.rand(T, cfg.d_model, generator=g, dtype=dtype)
    probe = torch.randn(T, cfg.d_model, generator=g, dtype=dtype)
    return layer, x, noise, probe


def _equivalence_worker(rank: int, world_size: int, cases: list[tuple]) -> list[dict]:
    results = []
    for case in cases:
        layer, x, noise, probe = _case(case)
        ep = ExpertParallelMoE.from_layer(layer)
        lo, hi = shard_bounds(x.shape[0], world_size)[rank]
        ids = torch.arange(lo, hi) * 7 if layer.config.router == "hash" else None
        x_local = x[lo:hi].clone().requires_grad_(True)
        y, info = ep(x_local, token_ids=ids, noise=None if noise is None else noise[lo:hi])
        (y * probe[lo:hi]).sum().backward()
        ep.all_reduce_replicated_grads()
        results.append(dict(
            y=y.detach(), x_grad=x_local.grad, dropped=info.dropped, capacity=info.capacity,
            combine_weights=info.combine_weights,
            grads={n: p.grad for n, p in ep.named_parameters() if not n.startswith("experts.")},
            expert_grads={n: p.grad for n, p in ep.experts.named_parameters()},
        ))
    return results


@pytest.mark.timeout(300)
@pytest.mark.parametrize("world_size", [2, 4])
def test_expert_parallel_equals_single_process_layer(world_size):
    per_rank = ep_launch.launch(_equivalence_worker, world_size, (CASES,))
    n_dropped = 0
    for i, case in enumerate(CASES):
        name, tol = case[0], (1e-5 if case[3] == "float32" else 1e-10)
        layer, x, noise, probe = _case(case)
        x = x.clone().requires_grad_(True)
        ids = torch.arange(x.shape[0]) * 7 if layer.config.router == "hash" else None
        y, info = layer(x, token_ids=ids, noise=noise)
        (y * probe).sum().backward()
        got = [r[i] for r in per_rank]

        def close(a, b, what, name=name, tol=tol):
            torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=lambda m: f"{name}, {what}: {m}")

        close(torch.cat([g["y"] for g in got]), y.detach(), "output")
        close(torch.cat([g["x_grad"] for g in got]), x.grad, "input grad")
        assert torch.equal(torch.cat([g["dropped"] for g in got]), info.dropped), f"{name}: drop decisions"
        close(torch.cat([g["combine_weights"] for g in got]), info.combine_weights, "combine weights")
        assert all(g["capacity"] == info.capacity for g in got), f"{name}: capacity"
        for n, p in layer.named_parameters():
            if n.startswith("experts."):  # each rank holds the slice of its experts
                full = torch.cat([g["expert_grads"][n.removeprefix("experts.")] for g in got])
                close(full, p.grad, f"grad of {n}")
            else:  # replicated, summed over the ranks
                for r, g in enumerate(got):
                    want = torch.zeros_like(p) if p.grad is None else p.grad
                    close(g["grads"][n], want, f"grad of {n} on rank {r}")
        n_dropped += int(info.dropped.sum())
    assert n_dropped > 0  # the capacity cases do drop


@pytest.mark.timeout(300)
@pytest.mark.parametrize("flags", [
    ["--world-size", "4", "--capacity-factor", "1.0", "--overflow-policy", "probability"],
    ["--world-size", "2", "--capacity-factor", "1.25", "--skew", "2.0", "--forward-only"],
    ["--world-size", "1", "--capacity-factor", "none", "--router", "switch", "--top-k", "1"],
], ids=["w4-probability", "w2-skew-forward", "w1-switch-dropless"])
def test_ep_bench_bytes_equal_what_the_routing_implies(flags, capsys):
    argv = [*flags, "--experts", "8", "--tokens", "60", "--d-model", "16", "--hidden", "16", "--steps", "2",
            "--seed", "3", "--json"]
    assert eb.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    spec, _ = eb.parse_spec(argv)
    cfg, W = spec.config, spec.world_size
    for s, ranks in enumerate(result["per_step"]):
        layer = eb.bench_layer(spec)
        x, noise = eb.bench_batch(spec, spec.warmup + s)
        _, info = layer(x, noise=noise)  # the single-process routing of the same global batch
        cand, kept = ep_traffic.traffic_matrix(info.expert_index, info.selected & ~info.dropped, W, cfg.n_experts)
        want = ep_traffic.implied_phases(cand, kept, cfg.n_experts, cfg.d_model, 4,
                                         ep_traffic.priority_bytes_of(cfg, 4), spec.backward)
        table = ep_traffic.implied_traffic(info, cfg, W, backward=spec.backward)
        for r, got in enumerate(ranks):
            assert {k: tuple(v) for k, v in got["phases"].items()} == want[r], f"step {s} rank {r}"
            row = table.iloc[r]
            assert got["tokens_sent"] == row.tokens_sent and got["tokens_recv"] == row.tokens_recv
            assert got["tokens_local"] == row.tokens_local and got["dropped"] == row.dropped
    if W == 1:
        assert result["total"]["bytes_sent"] == 0


def test_implied_traffic_grows_with_top_k_and_shrinks_with_capacity():
    torch.manual_seed(0)
    x = torch.randn(256, 16)

    def sent(**fields) -> float:
        cfg = MoEConfig(d_model=16, n_experts=8, expert_hidden=8, **fields)
        torch.manual_seed(0)
        _, info = MoELayer(cfg)(x)
        frame = ep_traffic.implied_traffic(info, cfg, 4)
        assert frame.tokens_sent.sum() == frame.tokens_recv.sum()
        assert (frame.tokens_sent + frame.tokens_local).sum() + frame.dropped.sum() == info.selected.sum()
        return float(frame.bytes_sent.sum())

    assert sent(top_k=1) < sent(top_k=2) < sent(top_k=4)
    assert sent(top_k=2, capacity_factor=0.5) < sent(top_k=2, capacity_factor=1.0) <= sent(top_k=2)
    cfg = MoEConfig(d_model=16, n_experts=8, expert_hidden=8)
    _, info = MoELayer(cfg)(x)
    assert ep_traffic.implied_traffic(info, cfg, 1).bytes_sent.sum() == 0  # one rank: nothing crosses


def _fail_in_collective(rank: int, world_size: int) -> None:
    import torch.distributed as dist

    if rank == 1:
        raise ValueError("rank 1 broke")
    dist.barrier()  # rank 0 waits here for a peer that is gone


def _build_uneven(rank: int, world_size: int) -> None:
    ExpertParallelMoE(MoEConfig(n_experts=3, top_k=1))


def _hang(rank: int, world_size: int) -> None:
    import torch.distributed as dist

    if rank == 1:
        time.sleep(60)
    dist.barrier()


@pytest.mark.timeout(120)
def test_a_failing_rank_takes_the_group_down_with_its_name(capsys):
    t0 = time.monotonic()
    code = eb.main(["--world-size", "2", "--experts", "4", "--tokens", "32", "--d-model", "8", "--hidden", "8",
                    "--steps", "1", "--fail-rank", "1"])
    err = capsys.readouterr().err
    assert code == 1
    assert "rank 1 of 2 failed: RuntimeError: injected failure on rank 1" in err, err
    assert "Traceback" not in err
    with pytest.raises(ep_launch.EPLaunchError, match=r"rank 1 of 2 failed: ValueError: rank 1 broke"):
        ep_launch.launch(_fail_in_collective, 2)
    with pytest.raises(ep_launch.EPLaunchError, match=r"failed: ValueError: world size 2 does not divide n_experts=3"):
        ep_launch.launch(_build_uneven, 2)
    assert time.monotonic() - t0 < 30


@pytest.mark.timeout(120)
def test_a_hanging_rank_times_out_instead_of_hanging():
    t0 = time.monotonic()
    with pytest.raises(ep_launch.EPLaunchError, match=r"rank 1 stopped responding"):
        ep_launch.launch(_hang, 2, timeout_s=2)
    with pytest.raises(ep_launch.EPLaunchError, match=r"did not finish within 1 s"):
        ep_launch.launch(_hang, 2, timeout_s=30, deadline_s=1)
    assert time.monotonic() - t0 < 20


@pytest.mark.parametrize("argv, words", [
    (["--world-size", "3", "--experts", "8"], "does not divide n_experts=8"),
    (["--world-size", "0"], "world size 0 is out of range"),
    (["--top-k", "two"], "argument --top-k: invalid int value"),
    (["--capacity-factor", "lots"], "is not a number or 'none'"),
    (["--router", "soft"], "not supported by expert parallelism"),
    (["--router", "switch", "--top-k", "2"], "top_k=2 is not allowed with router 'switch'"),
    (["--world-size", "4", "--tokens", "3"], "fewer than the world size"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_flags_exit_2_with_one_line(argv, words, capsys):
    assert eb.main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and err.startswith("ep-bench: error: "), err


def test_world_size_must_divide_experts():
    check_world_size(16, 4)
    with pytest.raises(ValueError, match=r"choose a world size among \[1, 2, 3, 4, 6, 12\]"):
        check_world_size(12, 5)
    assert shard_bounds(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
