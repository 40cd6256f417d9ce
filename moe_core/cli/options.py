"""Command-line flags that mirror the config fields, and how their values become validated configs.

One table (OPTIONS) drives `train`, `sweep` and `info`: every flag names the config section and field it
sets. Flags left out take the dataclass defaults, so the configs stay the single source of defaults.
"""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, fields
from typing import Any

from moe_core.layer.config import OVERFLOW_POLICIES, ROUTERS, MoEConfig
from moe_core.training.datasets import DATASETS, DataConfig
from moe_core.training.models import ModelConfig
from moe_core.training.trainer import TrainConfig

PROG = "moe-playground"
DEVICES = ("auto", "cpu", "cuda", "mps")
_SECTIONS = {"moe": MoEConfig, "model": ModelConfig, "data": DataConfig, "train": TrainConfig}


class UsageError(Exception):
    """A bad flag or value: main() prints `moe-playground: error: <message>` and returns 2."""


def capacity_factor_arg(text: str) -> float | None:
    """A positive number, or 'none' (any case) for dropless routing."""
    if text.strip().lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid capacity factor {text!r}: give a positive number, or 'none' for dropless"
        ) from None


@dataclass(frozen=True)
class Option:
    """One command-line flag and the config field it sets."""

    flag: str  # e.g. "--top-k"
    section: str  # moe | model | data | train
    field: str  # the config field
    type: Any  # int, float, str, bool (an on/off switch) or a parsing function
    help: str
    choices: tuple[str, ...] | None = None
    name: str = ""  # the column name when the flag's own would clash with a metric column

    @property
    def dest(self) -> str:
        """The argparse destination, also the column name in a sweep CSV (--top-k -> top_k)."""
        return self.name or self.flag[2:].replace("-", "_")

    @property
    def default(self) -> Any:
        f = next(f for f in fields(_SECTIONS[self.section]) if f.name == self.field)
        return f.default if f.default is not MISSING else f.default_factory()


OPTIONS: tuple[Option, ...] = (
    # data
    Option("--dataset", "data", "dataset", str, "data set", tuple(DATASETS)),
    Option("--samples", "data", "n_samples", int, "points (train + test); the language stream has 100x characters"),
    Option("--noise", "data", "noise", float, "data noise 0..1 (meaning depends on the data set)"),
    Option("--classes", "data", "n_classes", int, "classes for blobs/rings, arms for spirals"),
    Option("--test-fraction", "data", "test_fraction", float, "held-out share of the points"),
    Option("--data-seed", "data", "seed", int, "seed of the data set (default: the value of --seed)"),
    # one MoE layer
    Option("--d-model", "moe", "d_model", int, "width of the tokens"),
    Option("--experts", "moe", "n_experts", int, "routed experts E"),
    Option("--top-k", "moe", "top_k", int, "experts per token k"),
    Option("--expert-hidden", "moe", "expert_hidden", int, "hidden width of each SwiGLU expert"),
    Option("--capacity-factor", "moe", "capacity_factor", capacity_factor_arg,
           "C = ceil(cf*k*T/E); 'none' = dropless"),
    Option("--router", "moe", "router", str, "router", ROUTERS),
    Option("--normalize-topk", "moe", "normalize_topk", bool, "renormalize the k selected weights to sum to 1"),
    Option("--overflow-policy", "moe", "overflow_policy", str, "who keeps a slot on overflow", OVERFLOW_POLICIES),
    Option("--aux-loss", "moe", "aux_loss_coef", float, "weight of the load-balancing loss", name="aux_loss_coef"),
    Option("--z-loss", "moe", "z_loss_coef", float, "weight of the router z-loss", name="z_loss_coef"),
    Option("--router-noise", "moe", "router_noise", float, "train-time noise on the router"),
    Option("--shared-experts", "moe", "n_shared_experts", int, "always-on shared experts"),
    Option("--bias-update-rate", "moe", "bias_update_rate", float, "sigmoid_bias: bias step per optimizer step"),
    Option("--slots-per-expert", "moe", "slots_per_expert", int, "soft: slots per expert"),
    # the network
    Option("--layers", "model", "n_layers", int, "residual MoE blocks"),
    Option("--dense", "model", "dense", bool, "train the dense twin (a SwiGLU of the same active width)"),
    Option("--context", "model", "context", int, "language model: characters per window"),
    Option("--heads", "model", "n_heads", int, "language model: attention heads"),
    # training
    Option("--lr", "train", "lr", float, "AdamW learning rate"),
    Option("--batch-size", "train", "batch_size", int, "points (or character windows) per step"),
    Option("--seed", "train", "seed", int, "seed of weights, batches and router noise (and of the data)"),
    Option("--device", "train", "device", str, "device", DEVICES),
    Option("--threads", "train", "threads", int, "torch CPU threads"),
    Option("--weight-decay", "train", "weight_decay", float, "AdamW weight decay"),
    Option("--grad-clip", "train", "grad_clip", float, "max gradient norm; 0 = off"),
)
OPTION_BY_DEST = {opt.dest: opt for opt in OPTIONS}


def add_config_options(parser: argparse.ArgumentParser, multi: bool = False) -> None:
    """Add every config flag; unset flags stay absent from the namespace. multi: value flags take 1+ values."""
    groups = {
        "data": parser.add_argument_group("data"),
        "moe": parser.add_argument_group("MoE layer"),
        "model": parser.add_argument_group("network"),
        "train": parser.add_argument_group("training"),
    }
    for opt in OPTIONS:
        default = "none" if opt.default is None else opt.default
        help_text = opt.help if opt.dest == "data_seed" else f"{opt.help} (default: {default})"
        if opt.choices:
            help_text += "; one of " + ", ".join(opt.choices)
        kwargs: dict[str, Any] = dict(dest=opt.dest, default=argparse.SUPPRESS, help=help_text.replace("%", "%%"))
        if opt.type is bool:
            groups[opt.section].add_argument(opt.flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        metavar = "NAME" if opt.choices else {int: "N", float: "X"}.get(opt.type, "CF")
        if multi:
            kwargs["nargs"] = "+"
        groups[opt.section].add_argument(opt.flag, type=opt.type, choices=opt.choices, metavar=metavar, **kwargs)


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """The config flags that were given, by dest (a list per flag for a sweep)."""
    return {dest: getattr(args, dest) for dest in OPTION_BY_DEST if hasattr(args, dest)}


def effective_values(given: dict[str, Any]) -> dict[str, Any]:
    """Every config flag's value for one run: the given ones, the config defaults for the rest."""
    values = {opt.dest: given.get(opt.dest, opt.default) for opt in OPTIONS}
    if "data_seed" not in given:
        values["data_seed"] = values["seed"]
    return values


def build_configs(given: dict[str, Any]) -> tuple[ModelConfig, DataConfig, TrainConfig]:
    """(model, data, train) configs from single flag values; a bad value raises UsageError with the config's
    own message. --seed seeds the data too unless --data-seed is given."""
    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for dest, value in given.items():
        opt = OPTION_BY_DEST[dest]
        sections[opt.section][opt.field] = value
    if "data_seed" not in given and "seed" in given:
        sections["data"]["seed"] = given["seed"]
    try:
        moe = MoEConfig(**sections["moe"])
        model = ModelConfig(moe=moe, **sections["model"])
        data = DataConfig(**sections["data"])
        train = TrainConfig(**sections["train"])
    except ValueError as err:
        raise UsageError(str(err)) from None
    return model, data, train
