"""Load a pretrained MoE language model safely, once per server process.

The rules a classroom server needs (issue #16, item 5):
- the administrator's allow-list decides what may be loaded (moe_core/real_models/server.toml, or the file named
  by MOE_REAL_MODELS_CONFIG); local folders are refused unless `allow_local_paths = true`, so no learner can make
  the server read its own files;
- `trust_remote_code` is never enabled: a repository whose architecture transformers does not ship is refused;
- before any weight is read, the memory is estimated from the config (parameters counted on the meta device x
  bytes of the checkpoint's dtype) and the load refused when it exceeds the machine's available memory;
- with HF_HUB_OFFLINE set (or no network) a model missing from the local cache gets one clear sentence;
- one loaded copy per model per process, in eval mode with gradients off, shared read-only by every session.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from moe_core.real_models.families import FAMILIES, UNSUPPORTED, Family, supported_names

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None  # type: ignore[assignment]

CONFIG_ENV = "MOE_REAL_MODELS_CONFIG"
DEFAULT_CONFIG = Path(__file__).resolve().parent / "server.toml"
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
# the files a causal LM and its tokenizer need; .bin and other weight copies are never downloaded
DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]
Progress = Callable[[int, int], None]  # (bytes done, bytes total)


class RefusedError(ValueError):
    """The server will not load this model, or not this text; the message says why in one sentence or two."""


@dataclass(frozen=True)
class Policy:
    """What this server may load: read from the administrator's TOML file (see docs/deploy.md)."""

    allowed: tuple[str, ...] = ()
    allow_local_paths: bool = False
    max_chars: int = 2000
    source: str = "built-in defaults"

    def is_allowed(self, name: str) -> bool:
        return name in self.allowed


def read_policy(path: str | os.PathLike | None = None) -> Policy:
    """The policy in `path`, else in $MOE_REAL_MODELS_CONFIG, else in moe_core/real_models/server.toml; built-in
    defaults (nothing allowed) when none exists. A malformed file raises ValueError naming the file."""
    path = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)
    if not path.is_file():
        return Policy()
    if tomllib is None:
        raise ValueError(f"{path}: reading the real-models config needs Python 3.11 or newer (tomllib)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        allowed = data.get("allowed", [])
        if not isinstance(allowed, list) or not all(isinstance(a, str) for a in allowed):
            raise ValueError("'allowed' must be a list of model ids or folders")
        max_chars = int(data.get("max_chars", 2000))
        if max_chars < 1:
            raise ValueError("'max_chars' must be a positive integer")
        return Policy(tuple(allowed), bool(data.get("allow_local_paths", False)), max_chars, str(path))
    except (tomllib.TOMLDecodeError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: {err}") from None


def offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it, checked at call time (tests and admins set it late)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def available_memory() -> int:
    """Bytes this machine can still give a new allocation (MemAvailable on Linux, else free physical pages)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def looks_like_path(name: str, probe_disk: bool = True) -> bool:
    """A folder rather than a Hub id: absolute, relative (./, ../), home-relative, or (probe_disk) an existing
    folder, as transformers itself would read it."""
    return name.startswith(("/", ".", "~", "\\")) or (probe_disk and os.path.isdir(os.path.expanduser(name)))


def check_allowed(name: str, policy: Policy) -> str:
    """The model id or folder to load, or RefusedError when this server's policy does not allow it."""
    name = name.strip()
    if not name:
        raise RefusedError("Name a model: a Hugging Face id such as 'allenai/OLMoE-1B-7B-0924'.")
    if policy.is_allowed(name):
        return name
    # With local folders off, decide from the name alone: probing the disk would tell a learner which folders
    # exist on the server (a different refusal for an existing relative folder).
    if looks_like_path(name, probe_disk=policy.allow_local_paths):
        if not policy.allow_local_paths:
            raise RefusedError(f"Local folders are switched off on this server, so '{name}' cannot be loaded; "
                               "the administrator can allow them in the server's real-models config.")
        if not os.path.isdir(os.path.expanduser(name)):
            raise RefusedError(f"There is no folder '{name}' on this server.")
        return os.path.expanduser(name)
    listed = ", ".join(policy.allowed) or "none"
    raise RefusedError(f"'{name}' is not on this server's list of models (allowed: {listed}).")


def _hub_file(model_id: str, filename: str) -> str:
    """One small file of a Hub repository, from the cache when offline; the errors become one sentence."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return hf_hub_download(model_id, filename, local_files_only=offline())
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline() else "the Hugging Face Hub cannot be reached"
        raise RefusedError(f"'{model_id}' is not in this machine's model cache and {why}, so it cannot be "
                           "downloaded; download it once with network access.") from None
    except RepositoryNotFoundError:
        raise RefusedError(f"There is no model '{model_id}' on the Hugging Face Hub (or it is private).") from None
    except EntryNotFoundError:
        raise RefusedError(f"'{model_id}' has no {filename}: it is not a transformers model.") from None
    except OSError as err:  # connection errors surface as OSError subclasses
        raise RefusedError(f"'{model_id}' could not be fetched from the Hugging Face Hub ({type(err).__name__}); "
                           "check the network, or set HF_HUB_OFFLINE=1 to use the local cache only.") from None


def read_config_dict(source: str) -> dict[str, Any]:
    """config.json of a local folder or Hub id, as a dict (no code is run)."""
    path = Path(source) / "config.json" if os.path.isdir(source) else Path(_hub_file(source, "config.json"))
    if not path.is_file():
        raise RefusedError(f"'{source}' has no config.json: it is not a transformers model folder.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise RefusedError(f"The config.json of '{source}' cannot be read ({err}).") from None


def check_family(source: str, config: dict[str, Any]) -> Family:
    """The supported family of this config, or RefusedError saying why not (remote code, not MoE, unsupported)."""
    from transformers import CONFIG_MAPPING

    model_type = str(config.get("model_type", ""))
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    if model_type not in CONFIG_MAPPING:
        if config.get("auto_map"):
            raise RefusedError(f"'{source}' needs its own Python code to run (trust_remote_code), which this "
                               "server never executes.")
        raise RefusedError(f"'{source}' has model_type '{model_type or '?'}', which transformers does not know.")
    if model_type in UNSUPPORTED:
        raise RefusedError(f"The {model_type} family is not supported here: {UNSUPPORTED[model_type]}. "
                           f"Supported: {supported_names()}.")
    if not _mentions_experts(config):
        raise RefusedError(f"'{source}' ({model_type}) is not a Mixture-of-Experts model: it has no router to "
                           f"show. Supported MoE families: {supported_names()}.")
    raise RefusedError(f"The {model_type} MoE family is not supported here yet: its router outputs and gate rule "
                       f"have not been checked against this page's. Supported: {supported_names()}.")


def _mentions_experts(config: Any) -> bool:
    """Whether a config dict (nested ones included, e.g. DBRX's ffn_config) sets a non-zero expert count."""
    if isinstance(config, dict):
        return any(("expert" in str(k) and isinstance(v, int) and not isinstance(v, bool) and v > 1)
                   or _mentions_experts(v) for k, v in config.items())
    return False


def dtype_of(config: Any) -> torch.dtype:
    """The dtype from_pretrained(dtype="auto") loads: the checkpoint's own, float32 when it names none."""
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or torch.float32
    return getattr(torch, dtype) if isinstance(dtype, str) else dtype


def parameter_count(config: Any) -> int:
    """Parameters of the causal LM this config builds, counted on the meta device (nothing allocated)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    dtype: str
    bytes: int
    available: int

    @property
    def fits(self) -> bool:
        return self.bytes <= self.available


def estimate_memory(config: Any) -> MemoryEstimate:
    """Weights' bytes = parameters x dtype bytes (activations of a short text are small beside them)."""
    n = parameter_count(config)
    dtype = dtype_of(config)
    size = torch.empty(0, dtype=dtype).element_size()
    return MemoryEstimate(n, str(dtype).removeprefix("torch."), n * size, available_memory())


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


@dataclass
class LoadedModel:
    """A model loaded once per process, shared read-only by every session: never train or modify it."""

    name: str
    family: Family
    model: Any
    tokenizer: Any
    config: Any
    memory: MemoryEstimate
    router_layers: tuple[int, ...]  # decoder layer index of each router, in forward order
    routers: tuple[torch.nn.Module, ...] = field(repr=False)
    shared_gates: tuple[torch.nn.Module, ...] = field(default=(), repr=False)  # Qwen2-MoE: one beside each router

    @property
    def n_experts(self) -> int:
        return int(self.routers[0].weight.shape[0])

    @property
    def top_k(self) -> int:
        return int(self.config.num_experts_per_tok)


def _router_modules(model: torch.nn.Module, family: Family) -> tuple[tuple[int, ...], tuple[torch.nn.Module, ...],
                                                                     tuple[torch.nn.Module, ...]]:
    """The family's router modules in forward order, the decoder layer each one sits in, and (for families with
    a gated shared expert) the shared expert's gate beside each router, in the same MoE block."""
    modules = dict(model.named_modules())
    layers, mods, gates = [], [], []
    for name, mod in modules.items():
        if type(mod).__name__ == family.router_class:
            parts = name.split(".")
            layers.append(next((int(p) for p in parts if p.isdigit()), len(layers)))
            mods.append(mod)
            if family.shared_gate:
                gates.append(getattr(modules[name.rpartition(".")[0]], family.shared_gate))
    if not mods:
        raise RefusedError(f"No {family.router_class} found in this {family.name} model: nothing to show.")
    return tuple(layers), tuple(mods), tuple(gates)


SNAPSHOT_BAR = "huggingface_hub.snapshot_download"  # the name of snapshot_download's bar of bytes written


def progress_class(progress: Progress | None) -> type:
    """A tqdm class for snapshot_download: huggingface_hub's own bar (shown on stderr when it is a terminal),
    which also reports the bytes of the whole snapshot to `progress`. It counts the bytes itself: a disabled
    tqdm (no terminal, as under a server) does not advance its own counter."""
    from huggingface_hub.utils import tqdm as hf_tqdm

    class Bar(hf_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._report = progress if kwargs.get("name") == SNAPSHOT_BAR else None
            self._done = 0
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            self._done += int(n or 0)
            if self._report is not None and self.total:
                self._report(min(self._done, int(self.total)), int(self.total))
            return super().update(n)

    return Bar


def _download(model_id: str, progress: Progress | None) -> str:
    """The local snapshot folder of a Hub model: downloaded (with a progress bar on stderr, and `progress`
    called with bytes done/total) unless cached; offline it only looks in the cache."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model_id, allow_patterns=DOWNLOAD_PATTERNS, local_files_only=offline(),
                                 tqdm_class=progress_class(progress))
    except OSError as err:
        raise RefusedError(f"'{model_id}' could not be downloaded ({type(err).__name__}); with no network, "
                           "set HF_HUB_OFFLINE=1 and use a model already in the cache.") from None


_CACHE: dict[str, LoadedModel] = {}
_LOCK = threading.Lock()  # one load at a time: two sessions asking at once get the same copy
LOADS: dict[str, int] = {}  # how many times each model was really loaded in this process (tests read it)


def load_model(name: str, policy: Policy | None = None, progress: Progress | None = None) -> LoadedModel:
    """The shared loaded copy of `name` (allow-listed id or folder), loading it on first use.

    Raises RefusedError with a sentence a learner can read when the policy, the family, the memory or the
    network says no. Checks run in order: allow-list, config (no weights), family, memory, download, load.
    """
    policy = policy or read_policy()
    source = check_allowed(name, policy)
    with _LOCK:
        if source in _CACHE:
            return _CACHE[source]
        loaded = _load(source, progress)
        _CACHE[source] = loaded
        LOADS[source] = LOADS.get(source, 0) + 1
        return loaded


def _load(source: str, progress: Progress | None) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    family = check_family(source, read_config_dict(source))
    folder = source if os.path.isdir(source) else None
    config = AutoConfig.from_pretrained(folder or source, trust_remote_code=False,
                                        local_files_only=folder is not None or offline())
    memory = estimate_memory(config)
    if not memory.fits:
        raise RefusedError(f"'{source}' needs about {_gb(memory.bytes)} for its {memory.parameters / 1e9:.2f} B "
                           f"parameters in {memory.dtype}, but this machine has only {_gb(memory.available)} "
                           "available; pick a smaller model.")
    folder = folder or _download(source, progress)
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto", trust_remote_code=False,
                                                     local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False, local_files_only=True)
    except (OSError, ValueError) as err:
        raise RefusedError(f"'{source}' could not be loaded: {err}") from None
    model.eval()
    model.requires_grad_(False)
    layers, routers, gates = _router_modules(model, family)
    return LoadedModel(source, family, model, tokenizer, model.config, memory, layers, routers, gates)


def loaded_models() -> dict[str, LoadedModel]:
    """The models loaded in this process so far (a copy of the cache's index)."""
    with _LOCK:
        return dict(_CACHE)


def forget_all() -> None:
    """Drop every cached model (tests only: a server keeps its copies for its lifetime)."""
    with _LOCK:
        _CACHE.clear()
        LOADS.clear()
