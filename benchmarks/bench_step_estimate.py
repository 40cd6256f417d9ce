"""The step-time estimate (moe_core/training/step_cost.py) against real training steps, one thread.

    .venv/bin/python benchmarks/bench_step_estimate.py [--steps 10]

For each configuration: the estimate, then the median of --steps timed training steps after one warm-up step.
The app warns above step_cost.SLOW_STEP_MS; what matters is that the estimate lands on the right side of it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from moe_core.training.settings import PlaygroundSettings
from moe_core.training.step_cost import SLOW_STEP_MS, estimate_step_ms, matmul_flops_per_second
from moe_core.training.trainer import Trainer

CONFIGS = [
    {},
    {"n_experts": 16, "top_k": 4, "batch_size": 512, "expert_hidden": 128, "n_layers": 2},
    {"n_experts": 64, "top_k": 8, "batch_size": 1024, "expert_hidden": 256},
    {"dataset": "tokens"},
    {"dataset": "tokens", "n_experts": 16, "top_k": 4, "batch_size": 1024, "expert_hidden": 256, "n_layers": 4},
    {"router": "dense", "n_experts": 32, "batch_size": 1024, "expert_hidden": 256},
    {"router": "expert_choice", "n_experts": 64, "top_k": 16, "batch_size": 1024, "expert_hidden": 256},
    {"n_experts": 64, "top_k": 64, "batch_size": 1024, "expert_hidden": 256, "n_layers": 4},  # issue #13's link
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per configuration")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"matmul rate: {matmul_flops_per_second() / 1e9:.0f} GFLOP/s (one thread); warning above {SLOW_STEP_MS:g} ms")
    print(f"{'configuration':<95} {'estimate':>9} {'measured':>9} {'ratio':>6}")
    for changes in CONFIGS:
        settings = PlaygroundSettings(**changes)
        estimate = estimate_step_ms(settings)
        trainer = Trainer(*settings.to_configs())
        trainer.step(1)
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            trainer.step(1)
            times.append((time.perf_counter() - t0) * 1000)
        measured = statistics.median(times)
        name = ", ".join(f"{k}={v}" for k, v in changes.items()) or "default"
        print(f"{name:<95} {estimate:>7.1f}ms {measured:>7.1f}ms {estimate / measured:>6.2f}")


if __name__ == "__main__":
    main()
