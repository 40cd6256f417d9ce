"""How long one training step of a Playground configuration will take, estimated before building it.

A link such as ?experts=64&top_k=64&batch=1024&hidden=256&layers=4 asks for a model that takes seconds per
step; the app warns before a learner waits on it. The estimate counts the layer's matmul FLOPs
(metrics.flops_per_token), triples them for the backward pass, divides by this machine's matmul rate
(measured once per process, single thread, on expert-sized matrices) scaled by how much slower a training
step's many small matmuls run, and adds a fixed cost per step and per layer for the small ops around the
matmuls. On a 2-core server it landed within 1.5x of the real step time from 3 ms to 1.7 s a step
(benchmarks/README.md, "Step-time estimate").
"""

from __future__ import annotations

import functools
import time

import torch

from moe_core.layer import metrics
from moe_core.training.settings import PlaygroundSettings

SLOW_STEP_MS = 250.0  # above this the app warns: under 4 steps/s a lesson's budget takes minutes
BASE_MS = 1.5  # optimizer, data batch, read-back: per step
PER_LAYER_MS = 0.7  # routing, capacity and row moves around the matmuls: per MoE layer
MATMUL_EFFICIENCY = 0.35  # a training step's matmuls (small, per expert, transposed in backward) vs one big one
_MATMUL_SHAPE = (1024, 64, 256)  # tokens x d_model x expert width: a large Playground expert


@functools.lru_cache(maxsize=1)
def matmul_flops_per_second() -> float:
    """This process's single-thread matmul rate on expert-sized matrices (best of a few, ~20 ms once)."""
    m, k, n = _MATMUL_SHAPE
    a, b = torch.randn(m, k), torch.randn(k, n)
    with torch.no_grad():
        a @ b  # warm-up
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(4):
                a @ b
            best = min(best, (time.perf_counter() - t0) / 4)
    return 2.0 * m * k * n / max(best, 1e-9)


def estimate_step_ms(settings: PlaygroundSettings, flops_per_second: float | None = None) -> float:
    """Estimated wall time of one training step (forward + backward + update) in milliseconds."""
    model, _, train = settings.to_configs()
    tokens = train.batch_size * (model.context if settings.is_language else 1)
    forward = metrics.flops_per_token(model.moe, n_tokens=tokens)["total"] * tokens * model.n_layers
    rate = (flops_per_second or matmul_flops_per_second()) * MATMUL_EFFICIENCY
    return BASE_MS + PER_LAYER_MS * model.n_layers + 1000.0 * 3.0 * forward / rate


def slow_step_warning(settings: PlaygroundSettings) -> str | None:
    """A sentence for the learner when a step would take longer than SLOW_STEP_MS, else None."""
    ms = estimate_step_ms(settings)
    if ms <= SLOW_STEP_MS:
        return None
    return (f"This model is large for this server: about {ms / 1000:.1f} s per training step "
            f"({1000 / ms:.1f} steps/s), so training will be slow (and slows a shared server for everyone). "
            "Fewer experts, a smaller top-k, a smaller batch, narrower experts or fewer layers make it faster.")
