"""Training speed: full optimizer steps per second, MoE vs its dense twin, measured side by side.

    .venv/bin/python benchmarks/bench_train.py [--rounds 7] [--steps 200] [--threads 1] [--device cpu]

Configs: the Playground's default 2-D model (spirals, batch 256, 8 experts, top-2, d=64) and the default
language model (tokens, 4 windows x 64 characters, 8 experts, top-2, d=64), each next to the dense twin
whose SwiGLU has the same active width (k x h). Rounds alternate MoE and dense in shuffled order; the
ratio is the median of per-round ratios, so a busy machine slows both sides of a pair alike.
Targets (issue #3): MoE step <= 2x the dense step; the 2-D default >= 300 steps/s on one thread.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time
from dataclasses import replace

import torch

from moe_core.accelerator.kernels import kernels
from moe_core.training.settings import PlaygroundSettings
from moe_core.training.trainer import Trainer, resolve_device

CONFIGS = {
    "2-D default (spirals)": PlaygroundSettings(),
    "language default (tokens)": PlaygroundSettings(dataset="tokens"),
}


def make(settings: PlaygroundSettings, dense: bool, device: str, threads: int) -> Trainer:
    model, data, train = settings.to_configs()
    if dense:
        model = type(model)(**{**vars(model), "dense": True})
    return Trainer(model, data, replace(train, device=device, threads=threads))


def steps_per_second(trainer: Trainer, steps: int) -> float:
    t0 = time.perf_counter()
    trainer.step(steps)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()  # each step reads its metrics back already; this is for certainty
    return steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps", "auto"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.processor())
    device = resolve_device(args.device)
    gpu = f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    native = "on" if kernels() is not None and device.type == "cpu" else "off"
    print(f"machine: {cpu}{gpu}, device {device.type}, C kernels {native}, {torch.get_num_threads()} torch thread(s), "
          f"torch {torch.__version__}, {args.rounds} rounds x {args.steps} steps\n")
    print("| config | MoE steps/s | dense twin steps/s | MoE step / dense step | targets |")
    print("|---|---|---|---|---|")
    for name, settings in CONFIGS.items():
        trainers = {"moe": make(settings, False, device.type, args.threads),
                    "dense": make(settings, True, device.type, args.threads)}
        for t in trainers.values():
            t.step(20)  # warm up
        rates: dict[str, list[float]] = {"moe": [], "dense": []}
        ratios = []
        for _ in range(args.rounds):
            order = list(trainers)
            random.shuffle(order)
            got = {k: steps_per_second(trainers[k], args.steps) for k in order}
            for k, v in got.items():
                rates[k].append(v)
            ratios.append(got["dense"] / got["moe"])  # time per MoE step / time per dense step
        moe, dense = statistics.median(rates["moe"]), statistics.median(rates["dense"])
        ratio = statistics.median(ratios)
        targets = [f"ratio <= 2: {'PASS' if ratio <= 2 else 'FAIL'}"]
        if name.startswith("2-D") and device.type == "cpu" and args.threads == 1:
            targets.append(f">= 300 steps/s: {'PASS' if moe >= 300 else 'FAIL'}")
        print(f"| {name} | {moe:.0f} | {dense:.0f} | {ratio:.2f} | {'; '.join(targets)} |")


if __name__ == "__main__":
    main()
