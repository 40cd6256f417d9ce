"""PlaygroundSettings: every control of the Playground, its range, and its URL form.

The app's sidebar, a shared link (?experts=16&top_k=4) and a lesson preset all go through this one
place, so that a copied URL reproduces a state exactly and a bad URL never crashes a session: parsing
returns the settings it could use plus one plain-English warning per value it had to replace.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from moe_core.layer.config import (
    BF16_ROUTERS,
    CAUSAL_ROUTERS,
    LIVE_FIELDS,
    OVERFLOW_POLICIES,
    ROUTER_DTYPES,
    ROUTER_INFO,
    ROUTERS,
    MoEConfig,
    RouterInfo,
)
from moe_core.training.datasets import DATASETS, DataConfig
from moe_core.training.models import ModelConfig
from moe_core.training.trainer import TRAIN_LIVE_FIELDS, TrainConfig

D_MODEL = 64  # width of the playground's models (fixed: it is not what the lessons are about)
LM_CONTEXT = 64  # characters per window for the language model
LM_HEADS = 4
PACE_FIELDS = frozenset({"steps_per_tick"})  # read by the session between ticks, never by the model or trainer
# settings that apply between steps: the layer's and the trainer's live fields (same names here), and the pace
LIVE_SETTINGS = LIVE_FIELDS | TRAIN_LIVE_FIELDS | PACE_FIELDS


@dataclass(frozen=True)
class Control:
    """One control: its settings field, URL key, kind and range. Shown by the UI, used by the parser.

    step: a slider's step; marks: a select-slider's values (a value set by URL between two marks is added)."""

    field: str
    url: str  # query-parameter name
    label: str
    kind: str  # int | float | choice | bool | optional_float
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    help: str = ""
    step: float | None = None
    marks: tuple[float, ...] = ()

    @property
    def resets(self) -> bool:
        """Changing it rebuilds the model (shapes, data or seed change): not a layer, trainer or pace live field."""
        return self.field not in LIVE_SETTINGS


CONTROLS: tuple[Control, ...] = (
    Control("dataset", "dataset", "Dataset", "choice", choices=tuple(DATASETS),
            help="What the model learns: 2-D points, a multi-regime curve, or a stream of characters."),
    Control("noise", "noise", "Noise", "float", 0.0, 1.0, step=0.05,
            help="How noisy the generated points are."),
    Control("n_classes", "classes", "Classes", "int", 2, 8, help="Classes (blobs, rings) or arms (spirals)."),
    Control("seed", "seed", "Seed", "int", 0, 999_999, help="Same seed and settings give the same run, step by step."),
    Control("router", "router", "Router", "choice", choices=ROUTERS,
            help="How tokens are sent to experts; each router is a method from a paper (see the Reference page)."),
    Control("n_experts", "experts", "Experts", "int", 1, 64, help="How many expert networks the layer has (E)."),
    Control("top_k", "top_k", "Top-k", "int", 1, 64,
            help="How many experts each token uses (k): the sparsity. With expert choice, the average per token."),
    Control("capacity_factor", "capacity", "Capacity factor", "optional_float", 0.25, 4.0, step=0.05,
            help="Slots per expert C = ceil(cf x k x T / E); tokens beyond C are dropped. 'none' = no limit."),
    Control("overflow_policy", "overflow", "Overflow priority", "choice", choices=OVERFLOW_POLICIES,
            help="Who keeps a slot when an expert is full: earlier tokens, or the most confident ones."),
    Control("aux_loss_coef", "aux", "Balancing loss", "float", 0.0, 1.0,
            marks=(0.0, 1e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0),
            help="Weight of the load-balancing loss that pushes the router to spread tokens evenly."),
    Control("z_loss_coef", "z", "Router z-loss", "float", 0.0, 0.1, marks=(0.0, 1e-4, 1e-3, 1e-2, 0.1),
            help="Weight of the z-loss that keeps router logits small and training stable (ST-MoE)."),
    Control("router_noise", "router_noise", "Router noise", "float", 0.0, 1.0, step=0.01,
            help="Training-time noise on the router's input (jitter) or on the Soft MoE logits."),
    Control("router_dtype", "router_dtype", "Router precision", "choice", choices=ROUTER_DTYPES,
            help="Number format of the router's logits and softmax: float32 (Switch's selective precision) or "
                 "bfloat16, as plain mixed-precision training would compute them. Softmax top-k routers only."),
    Control("normalize_topk", "normalize", "Renormalize top-k", "bool",
            help="Rescale the k chosen weights to sum to 1 (Mixtral) or keep the raw probabilities."),
    Control("bias_update_rate", "bias_rate", "Bias update rate", "float", 0.0, 0.1,
            marks=(0.0, 1e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1),
            help="sigmoid_bias only: how fast the loss-free bias balances the load (DeepSeek-V3: 0.001, then 0 "
                 "for its last 500B tokens)."),
    Control("n_shared_experts", "shared", "Shared experts", "int", 0, 4,
            help="Experts every token always uses, on top of the routed ones (DeepSeekMoE)."),
    Control("lr", "lr", "Learning rate", "float", 1e-5, 100.0,
            marks=(1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0),
            help="Step size of the optimizer."),
    Control("batch_size", "batch", "Batch size", "int", 16, 1024, marks=(16, 32, 64, 128, 256, 512, 1024),
            help="Tokens per training step (T in the capacity formula)."),
    Control("expert_hidden", "hidden", "Expert width", "int", 4, 256, marks=(4, 8, 16, 32, 64, 128, 256),
            help="Hidden units of each expert."),
    Control("n_layers", "layers", "Layers", "int", 1, 4, help="How many MoE blocks are stacked."),
    Control("steps_per_tick", "speed", "Speed (steps per tick)", "int", 1, 200,
            help="Training steps between two redraws."),
)
CONTROL_BY_FIELD = {c.field: c for c in CONTROLS}
CONTROL_BY_URL = {c.url: c for c in CONTROLS}
UI_PARAMS = ("present", "hide", "lesson", "step", "page")  # handled by the app, not settings


@dataclass(frozen=True)
class PlaygroundSettings:
    dataset: str = "spirals"
    noise: float = 0.1
    n_classes: int = 3
    seed: int = 0
    router: str = "softmax_topk"
    n_experts: int = 8
    top_k: int = 2
    capacity_factor: float | None = None
    overflow_policy: str = "position"
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.0
    router_noise: float = 0.0
    router_dtype: str = "float32"
    normalize_topk: bool = True
    bias_update_rate: float = 1e-3
    n_shared_experts: int = 0
    lr: float = 3e-3
    batch_size: int = 256
    expert_hidden: int = 64
    n_layers: int = 1
    steps_per_tick: int = 20

    def __post_init__(self) -> None:
        problems = validate(asdict(self))
        if problems:
            raise ValueError(problems[0])

    @property
    def is_language(self) -> bool:
        return DATASETS[self.dataset].task == "language"

    def to_configs(self) -> tuple[ModelConfig, DataConfig, TrainConfig]:
        moe = MoEConfig(
            d_model=D_MODEL, n_experts=self.n_experts, top_k=self.top_k, expert_hidden=self.expert_hidden,
            capacity_factor=self.capacity_factor, router=self.router, normalize_topk=self.normalize_topk,
            overflow_policy=self.overflow_policy, aux_loss_coef=self.aux_loss_coef, z_loss_coef=self.z_loss_coef,
            router_noise=self.router_noise, n_shared_experts=self.n_shared_experts,
            bias_update_rate=self.bias_update_rate, router_dtype=self.router_dtype,
        )
        info = DATASETS[self.dataset]
        n_classes = self.n_classes
        if info.n_classes_range is not None:
            n_classes = min(max(n_classes, info.n_classes_range[0]), info.n_classes_range[1])
        data = DataConfig(dataset=self.dataset, noise=self.noise, n_classes=n_classes, seed=self.seed)
        batch = max(1, self.batch_size // LM_CONTEXT) if self.is_language else self.batch_size
        model = ModelConfig(moe=moe, n_layers=self.n_layers, context=LM_CONTEXT, n_heads=LM_HEADS)
        return model, data, TrainConfig(lr=self.lr, batch_size=batch, seed=self.seed)

    def resets_from(self, other: PlaygroundSettings) -> list[str]:
        """Fields whose change from `other` needs a new model (empty: everything can apply live)."""
        return [c.field for c in CONTROLS if c.resets and getattr(self, c.field) != getattr(other, c.field)]

    def live_changes_from(self, other: PlaygroundSettings) -> dict[str, Any]:
        return {c.field: getattr(self, c.field) for c in CONTROLS
                if not c.resets and getattr(self, c.field) != getattr(other, c.field)}

    # -- URLs -----------------------------------------------------------------------------------------------
    def to_query_params(self) -> dict[str, str]:
        """Only the values that differ from the defaults, as strings (a short, shareable link)."""
        default = PlaygroundSettings()
        out = {}
        for c in CONTROLS:
            value = getattr(self, c.field)
            if value != getattr(default, c.field):
                out[c.url] = format_value(c, value)
        return out

    @classmethod
    def from_query_params(cls, params: Mapping[str, Any]) -> tuple[PlaygroundSettings, list[str]]:
        """Parse URL parameters. Never raises: bad values fall back to defaults with one warning each."""
        values = asdict(cls())
        warnings: list[str] = []
        for key, raw in params.items():
            if key in UI_PARAMS:
                continue
            control = CONTROL_BY_URL.get(key)
            if control is None:
                warnings.append(f"Unknown URL parameter '{_short(key)}' was ignored.")
                continue
            if isinstance(raw, (list, tuple)):
                raw = raw[-1] if raw else ""
            value, problem = parse_value(control, raw)
            if problem:
                warnings.append(f"URL parameter {control.url}={_short(raw)!r}: {problem}; using the default "
                                f"{format_value(control, values[control.field])}.")
            else:
                values[control.field] = value
        settings, more = cls.coerce(values)
        return settings, warnings + more

    @classmethod
    def coerce(cls, values: dict[str, Any]) -> tuple[PlaygroundSettings, list[str]]:
        """Fix combinations that cannot work together (top_k > experts, a router whose paper fixes k or needs
        more experts: the rules of moe_core.layer.config's ROUTER_CATALOGUE; a non-causal router on text), saying
        what was changed."""
        default = cls()
        v = dict(values)
        notes = []
        router = ROUTER_INFO.get(v["router"])
        if router is not None and v["n_experts"] < router.min_experts:
            notes.append(min_experts_note(router))
            v["n_experts"] = router.min_experts
        if v["top_k"] > v["n_experts"]:
            new_k = min(default.top_k, v["n_experts"])
            notes.append(f"top-k {v['top_k']} is more than the {v['n_experts']} experts; top-k set to {new_k}.")
            v["top_k"] = new_k
        if router is not None and router.forced_top_k is not None and v["top_k"] != router.forced_top_k:
            notes.append(f"{router.forced_why[0].upper()}{router.forced_why[1:]}; top-k set to {router.forced_top_k}.")
            v["top_k"] = router.forced_top_k
        if DATASETS[v["dataset"]].task == "language" and v["router"] not in CAUSAL_ROUTERS:
            notes.append(non_causal_note(v["router"]))
            v["router"] = default.router
        if v["router_dtype"] == "bfloat16" and v["router"] not in BF16_ROUTERS:
            notes.append(f"The bfloat16 router precision is built for the softmax top-k routers "
                         f"({', '.join(BF16_ROUTERS)}), not '{v['router']}'; router precision set to float32.")
            v["router_dtype"] = "float32"
        problems = validate(v)
        for problem in problems:  # anything still wrong (should not happen) falls back field by field
            notes.append(problem)
        for field_name in {p.split("=")[0] for p in problems}:
            v[field_name] = getattr(default, field_name)
        try:
            return cls(**v), notes
        except ValueError as err:
            return cls(), [*notes, f"{err}; all settings reset to defaults."]


def non_causal_note(router: str) -> str:
    """The notice shown when a non-causal router meets the language model (the URL parser and the sidebar)."""
    default = ROUTER_INFO[PlaygroundSettings().router].short
    return (f"The {ROUTER_INFO[router].short} router is non-causal and cannot run a language model; "
            f"switched to {default}.")


def min_experts_note(router: RouterInfo) -> str:
    """The notice shown when the experts are raised to what `router` needs (the URL parser and the sidebar)."""
    m = router.min_experts
    return f"The {router.short} router needs at least {m} experts; experts set to {m}."


def validate(values: Mapping[str, Any]) -> list[str]:
    """One 'field=value: allowed …' message per value outside its control's range."""
    problems = [f"{c.field}={values.get(c.field)!r}: allowed {describe_range(c)}"
                for c in CONTROLS if not _in_range(c, values.get(c.field))]
    if not problems and values["top_k"] > values["n_experts"]:
        problems.append(f"top_k={values['top_k']}: allowed at most n_experts={values['n_experts']}")
    if not problems and values["router_dtype"] == "bfloat16" and values["router"] not in BF16_ROUTERS:
        problems.append(f"router_dtype='bfloat16': allowed only with the routers {', '.join(BF16_ROUTERS)}, "
                        f"not '{values['router']}'")
    return problems


def parse_value(control: Control, raw: Any) -> tuple[Any, str | None]:
    """(value, None) or (None, why not). Accepts the strings a URL carries and Python values."""
    c = control
    text = raw.strip() if isinstance(raw, str) else raw
    if c.kind == "choice":
        if text in c.choices:
            return text, None
        return None, f"not one of {', '.join(c.choices)}"
    if c.kind == "bool":
        if isinstance(text, bool):
            return text, None
        if isinstance(text, str) and text.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return text.lower() in ("1", "true", "yes", "on"), None
        return None, "not true or false"
    if c.kind == "optional_float" and (text is None or (isinstance(text, str) and text.lower() in ("none", ""))):
        return None, None
    try:
        number = float(text) if not isinstance(text, bool) else math.nan
    except (TypeError, ValueError):
        return None, "not a number"
    if not math.isfinite(number):
        if isinstance(text, str) and not any(w in text.lower() for w in ("inf", "nan")):
            return None, f"out of range (allowed {describe_range(c)})"  # digits too many for a float
        return None, "not a finite number"
    if c.kind == "int":
        if not number.is_integer():
            return None, "not a whole number"
        number = int(number)
    if not _in_range(c, number):
        return None, f"out of range (allowed {describe_range(c)})"
    return number, None


def _in_range(c: Control, value: Any) -> bool:
    if c.kind == "choice":
        return value in c.choices
    if c.kind == "bool":
        return isinstance(value, bool)
    if c.kind == "optional_float" and value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    if c.kind == "int" and not float(value).is_integer():
        return False
    return c.low <= value <= c.high


def describe_range(c: Control) -> str:
    if c.kind == "choice":
        return "one of " + ", ".join(c.choices)
    if c.kind == "bool":
        return "true or false"
    span = f"{c.low:g} to {c.high:g}"
    if c.kind == "int":
        return f"a whole number from {span}"
    if c.kind == "optional_float":
        return f"a number from {span}, or none"
    return f"a number from {span}"


def format_value(c: Control, value: Any) -> str:
    if value is None:
        return "none"
    if c.kind == "bool":
        return "1" if value else "0"
    if c.kind == "float" or c.kind == "optional_float":
        return repr(float(value)) if not float(value).is_integer() else f"{float(value):g}"
    return str(value)


def _short(text: Any, limit: int = 40) -> str:
    s = str(text)
    return s if len(s) <= limit else s[:limit] + "…"


def settings_fields() -> list[str]:
    return [f.name for f in fields(PlaygroundSettings)]
