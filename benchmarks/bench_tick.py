"""One UI tick at the Playground's default settings, split into its parts.

    .venv/bin/python benchmarks/bench_tick.py [--ticks 30]

A tick is what the live fragment does every TICK_SECONDS: train a time-boxed chunk of steps
(PlaygroundSession.tick: at most steps_per_tick steps within TRAIN_BUDGET_S, then a snapshot), build the
figures of the shown views, and serialize them to JSON for the browser. Target (issue #4): <= 250 ms. The totals
count the snapshot with the routing map's grid; while training, most ticks record one without it (MAP_GRID_EVERY_S).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from moe_core.training.session import PlaygroundSession
from moe_core.training.settings import PlaygroundSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "app"))
from moe_ui.live import TRAIN_BUDGET_S  # noqa: E402  (the app's own budget, not a copy)
from moe_ui.views import DEFAULT_VIEWS, available_views, builders  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ticks", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sess = PlaygroundSession(PlaygroundSettings())
    sess.tick(TRAIN_BUDGET_S)  # warm up
    parts: dict[str, list[float]] = {"train": [], "snapshot": [], "snapshot without the map grid": [],
                                     "figures (default 4)": [], "to_json (default 4)": [],
                                     "figures (all views)": [], "to_json (all views)": [], "steps": []}
    for _ in range(args.ticks):
        t0 = time.perf_counter()
        records = sess.trainer.run_for(TRAIN_BUDGET_S, max_steps=sess.settings.steps_per_tick)
        t1 = time.perf_counter()
        sess._record_snapshot()
        t2 = time.perf_counter()
        sess._record_snapshot(grid=False)  # what a training tick records between two with the grid
        parts["snapshot without the map grid"].append((time.perf_counter() - t2) * 1000)
        snap, history = sess.latest, sess.trainer.history
        make = builders(snap, history)
        for label, names in (("default 4", DEFAULT_VIEWS), ("all views", available_views(snap))):
            f0 = time.perf_counter()
            figs = [make[n]() for n in names]
            f1 = time.perf_counter()
            for fig in figs:
                fig.to_json()
            f2 = time.perf_counter()
            parts[f"figures ({label})"].append((f1 - f0) * 1000)
            parts[f"to_json ({label})"].append((f2 - f1) * 1000)
        parts["train"].append((t1 - t0) * 1000)
        parts["snapshot"].append((t2 - t1) * 1000)
        parts["steps"].append(len(records))
    med = {k: statistics.median(v) for k, v in parts.items()}
    default_tick = med["train"] + med["snapshot"] + med["figures (default 4)"] + med["to_json (default 4)"]
    all_tick = med["train"] + med["snapshot"] + med["figures (all views)"] + med["to_json (all views)"]
    print(f"median over {args.ticks} ticks at the default settings ({int(med['steps'])} training steps per tick)\n")
    print("| part | ms |\n|---|---|")
    for k, v in med.items():
        if k != "steps":
            print(f"| {k} | {v:.1f} |")
    print(f"| **tick, default views** | **{default_tick:.1f}** |")
    print(f"| **tick, every view** | **{all_tick:.1f}** |")
    print(f"\ntarget <= 250 ms: {'PASS' if default_tick <= 250 else 'FAIL'} (default views), "
          f"{'PASS' if all_tick <= 250 else 'FAIL'} (every view)")


if __name__ == "__main__":
    main()
