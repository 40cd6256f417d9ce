"""Command line: `moe-playground` (or `python -m moe_core`) with train, sweep, info, inspect and ep-bench.

    moe-playground train --dataset spirals --experts 8 --top-k 2 --steps 500 --metrics-out run.csv
    moe-playground sweep --top-k 1 2 4 --experts 4 8 16 --steps 200 --metrics-out sweep.csv
    moe-playground info --experts 64 --top-k 8 --capacity-factor 1.25 --tokens 4096
    moe-playground inspect --model allenai/OLMoE-1B-7B-0924 --text "x = 1" --out routing.csv --summary-json s.json

Flags mirror the config fields (see cli_options.OPTIONS). Bad flags or values print one line,
`moe-playground: error: ...`, and exit with status 2; a diverged training run exits with status 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, NoReturn

import torch

from moe_core import __version__
from moe_core.cli.options import PROG, UsageError, add_config_options, build_configs, config_values
from moe_core.cli.runs import cmd_sweep, cmd_train, configs_dict
from moe_core.layer import metrics
from moe_core.layer.capacity import expert_capacity
from moe_core.layer.config import MoEConfig
from moe_core.training.datasets import VOCAB, make_dataset
from moe_core.training.models import ModelConfig, PointMoENet, TinyMoELM

EP_BENCH = "ep-bench"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Train, sweep and size small Mixture-of-Experts models.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train one config, write per-step metrics as CSV",
                           description="Train one config; per-step metrics as CSV, optional JSON summary and "
                                       "checkpoint. Exit status 1 if training diverges.")
    add_config_options(train)
    out = train.add_argument_group("run and outputs")
    out.add_argument("--steps", type=int, default=500, metavar="N", help="optimizer steps (default: 500)")
    out.add_argument("--metrics-out", metavar="CSV", help="per-step metrics CSV ('-' = stdout)")
    out.add_argument("--summary-out", metavar="JSON", help="final metrics, timing and configs as JSON ('-' = stdout)")
    out.add_argument("--checkpoint-out", metavar="PT", help="checkpoint file (Trainer.from_checkpoint)")
    out.add_argument("--quiet", action="store_true", help="no progress bar")

    sweep = sub.add_parser("sweep", help="train every combination of the given flag values, one CSV row each",
                           description="Any value flag takes several values; the cartesian product is trained "
                                       "(each for --steps steps). Invalid combinations become rows with an error.")
    add_config_options(sweep, multi=True)
    out = sweep.add_argument_group("run and outputs")
    out.add_argument("--steps", type=int, default=200, metavar="N", help="optimizer steps per run (default: 200)")
    out.add_argument("--metrics-out", metavar="CSV", help="one row per run (default: stdout when done)")
    out.add_argument("--quiet", action="store_true", help="no progress bar and no per-run lines")

    info = sub.add_parser("info", help="capacity, parameters and FLOPs per token of a config, as JSON",
                          description="Print capacity, parameter counts and FLOPs per token of one MoE layer.")
    add_config_options(info)
    info.add_argument("--tokens", type=int, metavar="T",
                      help="tokens per MoE layer call, T of the capacity formula "
                           "(default: the batch size; batch size x context for the language model)")

    inspect = sub.add_parser("inspect", help="routing of a pretrained MoE model on a text, as CSV (and JSON)",
                             description="Run a pretrained MoE language model (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, "
                                         "Granite-MoE, DeepSeek-V2/V3) on a text and write its own routing: one "
                                         "CSV row per (layer, position, rank).")
    _inspect_module().add_arguments(inspect)

    sub.add_parser(EP_BENCH, help="expert-parallel benchmark (moe_core.scale_out.ep_bench; its own flags follow)",
                   add_help=False)
    return parser


def layer_capacity(cfg: MoEConfig, n_tokens: int) -> int | None:
    """Slots per expert for T tokens, as the router uses it: C = ceil(cf*k*T/E) for token choice (None =
    dropless), C = min(T, ceil(cf*k*T/E)) with cf defaulting to 1 for expert_choice, p slots for soft, and
    None for hash and dense (no capacity)."""
    if cfg.router in ("hash", "dense"):
        return None
    if cfg.router == "soft":
        return cfg.slots_per_expert
    if cfg.router == "expert_choice":
        return min(n_tokens, expert_capacity(n_tokens, cfg.n_experts, cfg.top_k, cfg.capacity_factor or 1.0))
    return expert_capacity(n_tokens, cfg.n_experts, cfg.top_k, cfg.capacity_factor)


def _network_parameters(model: ModelConfig, data_task: str, data: Any) -> int:
    """Parameters of the whole network, counted on the meta device (nothing allocated). Also runs the
    model's own checks, e.g. a non-causal router in the language model."""
    try:
        with torch.device("meta"):
            if data_task == "language":
                net = TinyMoELM(model, vocab_size=len(VOCAB))
            else:
                ds = make_dataset(data)
                net = PointMoENet(model, ds.input_dim, ds.n_classes if ds.task == "classification" else 1)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return sum(p.numel() for p in net.parameters())


def cmd_info(args: argparse.Namespace) -> int:
    """Capacity, parameters (per layer and whole network) and FLOPs per token, as JSON on stdout."""
    model, data, train = build_configs(config_values(args))
    task = data.info.task
    default_tokens = train.batch_size * (model.context if task == "language" else 1)
    tokens = default_tokens if args.tokens is None else args.tokens
    if tokens < 1:
        raise UsageError(f"--tokens={tokens} is out of range: allowed a positive integer")
    moe = model.moe
    result = {
        "capacity": layer_capacity(moe, tokens),
        "tokens": tokens,
        "parameters": metrics.parameter_counts(moe),
        "flops_per_token": metrics.flops_per_token(moe, n_tokens=tokens),
        "n_layers": model.n_layers,
        "network_parameters": _network_parameters(model, task, data),
        "config": configs_dict(model, data, train),
    }
    print(json.dumps(result, indent=2))
    return 0


def cmd_ep_bench(rest: list[str]) -> int:
    """Forward everything after `ep-bench` to moe_core.scale_out.ep_bench.main, imported only now."""
    try:
        module = importlib.import_module("moe_core.scale_out.ep_bench")
    except ImportError as err:
        raise UsageError(f"ep-bench is not available: moe_core.scale_out.ep_bench could not be imported ({err})"
                         ) from None
    code = module.main(rest)
    return 0 if code is None else int(code)


def _inspect_module():
    return importlib.import_module("moe_core.real_models.inspect_cli")  # light: transformers loads in run()


def cmd_inspect(args: argparse.Namespace) -> int:
    """Write the routing of --model on the text (moe_core.real_models.inspect_cli)."""
    try:
        return _inspect_module().run(args)
    except ValueError as err:  # RefusedError included: too big, not MoE, remote code, offline, ...
        raise UsageError(str(err)) from None


COMMANDS = {"train": cmd_train, "sweep": cmd_sweep, "info": cmd_info, "inspect": cmd_inspect}


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (0 ok, 1 diverged, 2 bad command line or config)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] == EP_BENCH:  # its flags are its own: pass them through untouched
            return cmd_ep_bench(argv[1:])
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as exit_:  # --help, --version, or a bad command line (already reported)
            return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
        return COMMANDS[args.command](args)
    except UsageError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # during start-up; train and sweep handle it themselves once running
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `moe-playground info | head`: stop quietly, as a killed pipe writer would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
