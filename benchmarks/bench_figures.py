"""Median time of every figure builder on a real snapshot (E=8, k=2, capacity factor 1, 48x48 grid).

    .venv/bin/python benchmarks/bench_figures.py                 # 30 rounds, ~20 s on 2 cores
    .venv/bin/python benchmarks/bench_figures.py --rounds 10 --steps 50

"build" is the builder alone; "+json" adds fig.to_json(), roughly what the app pays before Streamlit sends a
figure. Target: every build < 30 ms; the app's whole UI tick (training + several figures) has 250 ms.
Each round runs the builders in a fresh random order, so background load spreads over all of them.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from moe_core import figures as F  # noqa: E402
from moe_core.layer.config import MoEConfig  # noqa: E402
from moe_core.training.datasets import DataConfig  # noqa: E402
from moe_core.training.models import ModelConfig  # noqa: E402
from moe_core.training.trainer import TrainConfig, Trainer  # noqa: E402

TARGET_MS = 30.0
CURVE_METRICS = ["loss", "accuracy", "max_vio", "dropped_frac", "router_entropy", "load"]


def builders(snap, lang, history) -> dict:
    return {
        "routing_map top1": lambda: F.routing_map(snap),
        "routing_map second": lambda: F.routing_map(snap, mode="second"),
        "routing_map entropy": lambda: F.routing_map(snap, mode="entropy"),
        "routing_map prediction": lambda: F.routing_map(snap, mode="prediction"),
        "expert_load": lambda: F.expert_load(snap),
        "capacity_buffers": lambda: F.capacity_buffers(snap),
        "router_probabilities": lambda: F.router_probabilities(snap),
        "specialization": lambda: F.specialization(snap),
        "co_activation": lambda: F.co_activation(snap),
        "sparsity_cost": lambda: F.sparsity_cost(snap),
        f"training_curves ({len(CURVE_METRICS)} panels)": lambda: F.training_curves(history, CURVE_METRICS),
        "training_curves (1 panel)": lambda: F.training_curves(history, ["loss"]),
        "top_tokens_figure (language)": lambda: F.top_tokens_figure(lang),
        "probe_text_html (language)": lambda: F.probe_text_html(lang),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--steps", type=int, default=200, help="training steps before the snapshot")
    ap.add_argument("--grid", type=int, default=48)
    args = ap.parse_args()

    t = Trainer(ModelConfig(MoEConfig(n_experts=8, top_k=2, capacity_factor=1.0)), DataConfig(dataset="spirals"),
                TrainConfig())
    t.step(args.steps)
    snap, history = t.snapshot(grid_size=args.grid), t.history
    tl = Trainer(ModelConfig(MoEConfig(n_experts=8, top_k=2), n_layers=2, context=32, n_heads=2),
                 DataConfig(dataset="tokens", n_samples=500), TrainConfig(batch_size=8))
    tl.step(5)
    lang = tl.snapshot()
    table = builders(snap, lang, history)
    for build in table.values():  # warm up: imports, plotly's template, numpy caches
        fig = build()
        if not isinstance(fig, str):
            fig.to_json()
    build_ms: dict[str, list[float]] = {name: [] for name in table}
    json_ms: dict[str, list[float]] = {name: [] for name in table}
    rng = random.Random(0)
    for _ in range(args.rounds):
        names = list(table)
        rng.shuffle(names)
        for name in names:
            t0 = time.perf_counter()
            fig = table[name]()
            t1 = time.perf_counter()
            if not isinstance(fig, str):
                fig.to_json()
            t2 = time.perf_counter()
            build_ms[name].append((t1 - t0) * 1000)
            json_ms[name].append((t2 - t0) * 1000)
    print(f"snapshot: E={snap.n_experts}, k={snap.top_k}, grid {len(snap.grid_x)}x{len(snap.grid_y)}, "
          f"{len(history)} history rows, {args.rounds} rounds; medians in ms (target: build < {TARGET_MS:g})")
    print(f"{'builder':36s} {'build':>8s} {'+json':>8s}")
    worst = 0.0
    for name in table:
        b, j = statistics.median(build_ms[name]), statistics.median(json_ms[name])
        worst = max(worst, b)
        print(f"{name:36s} {b:8.2f} {j:8.2f}{'  OVER TARGET' if b > TARGET_MS else ''}")
    print(f"slowest build: {worst:.2f} ms ({'OK' if worst <= TARGET_MS else 'over target'})")


if __name__ == "__main__":
    main()
