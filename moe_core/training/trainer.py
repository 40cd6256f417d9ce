"""Trainer: a steppable, observable training loop for the 2-D, regression and language tasks.

minGPT-style: it knows nothing about any UI. Callers advance it with step(n) / run_for(seconds), read the
per-step records it returns (and `history`), and ask for snapshot() when they want to draw. Same configs
and seed => the same run, bit for bit on the CPU: weights, batches and router noise all come from
generators owned by this trainer, never from torch's global random state.
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from moe_core.layer import metrics
from moe_core.layer.moe_layer import LIVE_FIELDS, RoutingInfo
from moe_core.training.datasets import DataConfig, PointDataset, make_dataset, make_token_stream
from moe_core.training.models import ModelConfig, PointMoENet, TinyMoELM, moe_layers
from moe_core.training.snapshot import Snapshot, take_snapshot
from moe_core.validation import check_choice, check_float, check_int

CHECKPOINT_FORMAT = "moe-playground-checkpoint"
CHECKPOINT_VERSION = 1
_INIT_LOCK = threading.Lock()  # weight init draws from torch's global RNG: one model at a time
# TrainConfig fields that can change between steps (set_hyperparameters); the layer's are LIVE_FIELDS
TRAIN_LIVE_FIELDS = frozenset({"lr", "grad_clip", "weight_decay"})
RECENT_STEPS = 10  # typical_step_ms: the median of this many steps (one step's own time jumps on a busy machine)


@dataclass(frozen=True)
class TrainConfig:
    lr: float = 3e-3  # AdamW learning rate
    batch_size: int = 256  # points per step, or character windows per step for the language model
    seed: int = 0  # weights, batches and router noise
    device: str = "auto"  # auto (CUDA, then MPS, then CPU) | cpu | cuda | mps
    threads: int = 1  # torch CPU threads (2 gave no speed-up at these sizes, performance-anchors.md)
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    history_limit: int = 2000  # rows kept in `history`; older rows are thinned, never an unbounded list

    def __post_init__(self) -> None:
        check_float(self, "lr", 0.0, 100.0, low_open=True)
        check_float(self, "weight_decay", 0.0, 1.0)
        check_float(self, "grad_clip", 0.0, 1e6, extra="0 = off")
        for name, low, high in (("batch_size", 1, 8192), ("seed", 0, 2**32 - 1), ("threads", 1, 256),
                                ("history_limit", 10, 1_000_000)):
            check_int(self, name, low, high)
        check_choice(self, "device", ("auto", "cpu", "cuda", "mps"))


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device='mps' was asked for but this machine has no MPS backend; use 'auto' or 'cpu'")
    return torch.device(name)


class Diverged(RuntimeError):
    """Training stopped because the loss or the gradients stopped being finite numbers."""


class Trainer:
    def __init__(
        self,
        model: ModelConfig | None = None,
        data: DataConfig | None = None,
        train: TrainConfig | None = None,
        dataset: PointDataset | None = None,  # e.g. a user's CSV; overrides data.dataset
    ):
        self.model_config = model or ModelConfig()
        self.data_config = data or DataConfig()
        self.train_config = train or TrainConfig()
        tc = self.train_config
        self.device = resolve_device(tc.device)
        torch.set_num_threads(tc.threads)
        self.task = "classification" if dataset is not None and dataset.task == "classification" else None
        self.dataset: PointDataset | None = None
        self.stream = None
        if dataset is not None or self.data_config.info.task != "language":
            self.dataset = dataset if dataset is not None else make_dataset(self.data_config)
            self.task = self.dataset.task
            self.tensors = self.dataset.to_torch(self.device)
        else:
            self.task = "language"
            self.stream = make_token_stream(self.data_config.seed, n_chars=self.data_config.n_samples * 100)
            cut = int(len(self.stream.ids) * 0.9)
            if len(self.stream.ids) - cut < self.model_config.context + 1:
                raise ValueError(
                    f"n_samples={self.data_config.n_samples} gives {len(self.stream.ids)} characters, too few for "
                    f"a held-out window of context {self.model_config.context}: allowed at least "
                    f"{(self.model_config.context + 1) * 10 // 100 + 1} samples")
            ids = torch.as_tensor(self.stream.ids, device=self.device)
            self.train_ids, self.test_ids = ids[:cut], ids[cut:]
            self.domain_ids = torch.as_tensor(self.stream.domain_ids, device=self.device)
            self.test_offset = cut
        with _INIT_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(tc.seed)
            self.model = self._build_model().to(self.device)
        self.noise_generator = torch.Generator(device=self.device).manual_seed(tc.seed + 1)
        self.batch_generator = torch.Generator(device=self.device).manual_seed(tc.seed + 2)
        self.moe_layers = moe_layers(self.model)
        for layer in self.moe_layers:
            layer.router.generator = self.noise_generator
        # fused AdamW: one kernel for all parameters (the per-tensor loop cost more than the model's forward)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay,
                                           fused=self.device.type in ("cpu", "cuda"))
        self.params = list(self.model.parameters())
        self._param_data = [p.detach() for p in self.params]  # views of the weights (updated in place)
        self._good = [p.clone() for p in self._param_data]  # weights of the last finite step
        self._zero = torch.zeros((), device=self.device)
        self._load_columns = [f"load_{e}" for e in range(self.n_experts)]
        self._window = torch.arange(self.model_config.context + 1, device=self.device)  # (S+1,) LM batch offsets
        self.step_count = 0
        self.diverged: str | None = None  # the reason, once training has stopped
        self.last_step_ms = 0.0
        self.last_infos: list[RoutingInfo] = []
        self._records: list[dict[str, float]] = []
        self._history: pd.DataFrame | None = None  # _records as a frame, built on demand (see history)

    # -- construction --------------------------------------------------------------------------------
    def _build_model(self) -> torch.nn.Module:
        if self.task == "language":
            return TinyMoELM(self.model_config, vocab_size=len(self.stream.vocab))
        n_out = self.dataset.n_classes if self.task == "classification" else 1
        return PointMoENet(self.model_config, self.dataset.input_dim, n_out)

    @property
    def n_experts(self) -> int:
        return self.model_config.moe.n_experts

    # -- batches ----------------------------------------------------------------------------------------
    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) for one step, drawn from this trainer's own generator."""
        bs = self.train_config.batch_size
        if self.task == "language":
            S = self.model_config.context
            starts = torch.randint(0, len(self.train_ids) - S - 1, (bs,), generator=self.batch_generator,
                                   device=self.device)
            window = self.train_ids[starts[:, None] + self._window]  # (B, S+1)
            return window[:, :-1], window[:, 1:]
        idx = torch.randint(0, self.tensors.x_train.shape[0], (bs,), generator=self.batch_generator,
                            device=self.device)
        return self.tensors.x_train[idx], self.tensors.y_train[idx]

    def task_loss(self, out: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, quality): cross-entropy and accuracy, or mean squared error twice for regression."""
        if self.task == "regression":
            mse = F.mse_loss(out.squeeze(-1), target)
            return mse, mse.detach()
        logits = out.reshape(-1, out.shape[-1])
        target = target.reshape(-1)
        return F.cross_entropy(logits, target), (logits.argmax(-1) == target).float().mean()

    # -- training -----------------------------------------------------------------------------------------
    def step(self, n: int = 1) -> list[dict[str, float]]:
        """Advance n optimizer steps (fewer if training diverges). Returns one record per step."""
        records = []
        for _ in range(n):
            if self.diverged:
                break
            records.append(self._one_step())
        return [r for r in records if r is not None]

    def run_for(self, seconds: float, max_steps: int = 100_000) -> list[dict[str, float]]:
        """Step until `seconds` of wall time have passed (at least one step). For a UI tick."""
        records: list[dict[str, float]] = []
        deadline = time.perf_counter() + seconds
        while not self.diverged and len(records) < max_steps:
            records.extend(self.step(1))
            if time.perf_counter() >= deadline:
                break
        return records

    def _one_step(self) -> dict[str, float] | None:
        t0 = time.perf_counter()
        if not self.model.training:
            self.model.train()
        x, y = self._batch()
        out, infos = self.model(x)
        task_loss, quality = self.task_loss(out, y)
        loss = task_loss
        for info in infos:
            loss = loss + info.aux_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # also when the loss is not finite: the check below reads it back with everything else
        norm = self._clip_gradients()
        values = self._read_back(loss, task_loss, quality, norm, infos)  # the step's only device sync
        loss_v, norm_v = values[0], values[4]
        if not math.isfinite(loss_v):
            self._diverge(f"the loss became {loss_v} at step {self.step_count + 1}")
            return None
        if not math.isfinite(norm_v):
            self._diverge(f"the gradients became {norm_v} at step {self.step_count + 1}")
            return None
        for good, weight in zip(self._good, self._param_data, strict=True):  # the weights of this finite step
            good.copy_(weight)
        self.optimizer.step()
        for layer in self.moe_layers:
            layer.update_router_bias()
        self.step_count += 1
        self.last_infos = infos
        self.last_step_ms = (time.perf_counter() - t0) * 1000.0
        record = self._record(values, infos)
        self._remember(record)
        return record

    def _clip_gradients(self) -> torch.Tensor:
        """The global L2 norm of the gradients, which are scaled down to grad_clip when it is larger (0 = off)."""
        clip = self.train_config.grad_clip
        if clip > 0:
            return torch.nn.utils.clip_grad_norm_(self.params, clip, foreach=True)
        grads = [p.grad for p in self.params if p.grad is not None]
        return torch.nn.utils.get_total_norm(grads, foreach=True) if grads else self._zero

    def _diverge(self, what: str) -> None:
        """Stop, and put back the weights of the last step whose loss and gradients were finite."""
        for weight, good in zip(self._param_data, self._good, strict=True):
            weight.copy_(good)
        self.optimizer.zero_grad(set_to_none=True)
        self.diverged = (
            f"Training stopped: {what}. The weights of the last good step are kept. Lower the learning rate "
            f"(now {self.optimizer.param_groups[0]['lr']:g}) or the loss coefficients and start again."
        )

    def _read_back(self, loss, task_loss, quality, grad_norm, infos: list[RoutingInfo]) -> list[float]:
        """Every number a step reports, gathered into one tensor and read back with a single sync:
        [loss, task_loss, quality, z_loss, grad_norm, (summed router entropy, then per layer the E selected and
        the E kept slots per expert)]. _record turns them into metrics (dropped = selected - kept)."""
        z = [i.losses["z"] for i in infos if "z" in i.losses]
        z_mean = (z[0] if len(z) == 1 else sum(z) / len(z)).detach() if z else self._zero
        parts = [torch.stack([loss.detach(), task_loss.detach(), quality.float(), z_mean, grad_norm])]
        if infos:
            p = infos[0].router_probs if len(infos) == 1 else torch.cat([i.router_probs for i in infos])
            parts.append(torch.special.entr(p).sum()[None])  # 0 ln 0 = 0; divided by the rows in _record
            for info in infos:
                parts += [info.tokens_per_expert, info.kept_per_expert]
        return torch.cat(parts).tolist()  # cat promotes the counts to float

    def _record(self, values: list[float], infos: list[RoutingInfo]) -> dict[str, float]:
        """One row of metrics from _read_back's numbers."""
        loss_v, task_v, quality_v, z_v = values[:4]
        rec: dict[str, float] = {"step": self.step_count, "loss": loss_v, "task_loss": task_v,
                                 "aux_loss": loss_v - task_v, "z_loss": z_v}
        rec["mse" if self.task == "regression" else "accuracy"] = quality_v
        if infos:
            E = self.n_experts
            per_layer = [values[i : i + E] for i in range(6, len(values), E)]  # per layer: selected, then kept
            selected, kept = per_layer[0::2], per_layer[1::2]
            n_selected = sum(map(sum, selected))
            n_dropped = n_selected - sum(map(sum, kept))
            load = selected[0] if len(infos) == 1 else [sum(c) / len(infos) for c in zip(*selected, strict=True)]
            cv, max_vio, usage = metrics.load_summary(load)
            rows = sum(info.n_tokens for info in infos)
            rec.update(load_cv=cv, max_vio=max_vio, dropped_frac=n_dropped / max(n_selected, 1.0),
                       router_entropy=values[5] / rows, usage_entropy=usage)
            rec.update(zip(self._load_columns, load, strict=True))
        rec["step_ms"] = self.last_step_ms
        rec["lr"] = self.optimizer.param_groups[0]["lr"]
        return rec

    def _remember(self, record: dict[str, float]) -> None:
        """Keep at most history_limit rows: when full, every other row of the older half goes."""
        self._records.append(record)
        self._history = None
        limit = self.train_config.history_limit
        if len(self._records) > limit:
            half = len(self._records) // 2
            self._records = self._records[:half][::2] + self._records[half:]

    @property
    def typical_step_ms(self) -> float:
        """Median wall time of the last RECENT_STEPS training steps, from the history's records (0 before any)."""
        return float(statistics.median(r["step_ms"] for r in self._records[-RECENT_STEPS:])) if self._records else 0.0

    @property
    def history(self) -> pd.DataFrame:
        """One row per kept training step. Built from the records once per change (a page asks for it on every
        redraw); each caller gets its own copy, a plain memory copy, far cheaper than the build."""
        if self._history is None:
            self._history = pd.DataFrame.from_records(self._records) if self._records else pd.DataFrame()
        return self._history.copy()

    # -- live changes -----------------------------------------------------------------------------------
    def set_hyperparameters(self, **changes: Any) -> None:
        """Change any field in TRAIN_LIVE_FIELDS or the layer's LIVE_FIELDS between steps, without a reset.

        Everything is validated before anything changes: a bad value raises ValueError and leaves the
        trainer exactly as it was.
        """
        changes = dict(changes)
        train_changes = {k: changes.pop(k) for k in TRAIN_LIVE_FIELDS if k in changes}
        unknown = sorted(set(changes) - LIVE_FIELDS)
        if unknown:
            raise ValueError(f"{unknown} cannot change during training (they change the model's shapes); "
                             f"live fields are {sorted(LIVE_FIELDS | TRAIN_LIVE_FIELDS)}")
        new_moe = self.model_config.moe.replace(**changes)  # validates
        new_train = TrainConfig(**{**asdict(self.train_config), **train_changes})  # validates
        self.model_config = ModelConfig(**{**{f.name: getattr(self.model_config, f.name)
                                              for f in fields(ModelConfig)}, "moe": new_moe})
        for layer in self.moe_layers:
            layer.set_hyperparameters(**changes)
        self.train_config = new_train
        for group in self.optimizer.param_groups:
            group["lr"] = new_train.lr
            group["weight_decay"] = new_train.weight_decay

    # -- read API for snapshots (moe_core.training.snapshot reads these, never the internals) ------------------
    def held_out(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inputs, targets, groups) of the held-out set the views evaluate: the test points (N, D), (N,), (N,);
        or up to 8 test windows of text (W, S), their next characters (W, S) and their domains (W, S)."""
        if self.task != "language":
            t = self.tensors
            return t.x_test, t.y_test, t.group_test
        S = self.model_config.context
        n_windows = max(1, min(8, len(self.test_ids) // (S + 1)))
        windows = self.test_ids[: n_windows * (S + 1)].view(n_windows, S + 1)  # (W, S+1)
        domains = self.domain_ids[self.test_offset : self.test_offset + n_windows * (S + 1)]
        return windows[:, :-1], windows[:, 1:], domains.view(n_windows, S + 1)[:, :-1]

    @torch.no_grad()
    def evaluate(self, inputs: torch.Tensor) -> tuple[torch.Tensor, list[RoutingInfo]]:
        """The model's (output, routing per MoE layer) for `inputs` in eval mode (no router noise, no grad);
        the training mode is restored afterwards. Accepts numpy arrays too (moved to this trainer's device)."""
        was_training = self.model.training
        self.model.eval()
        try:
            return self.model(torch.as_tensor(inputs, device=self.device))
        finally:
            self.model.train(was_training)

    def router_biases(self) -> list[torch.Tensor | None]:
        """Per MoE layer, the selection bias its router adds to sigmoid(logits) (sigmoid_bias), else None."""
        return [getattr(layer.router, "bias", None) for layer in self.moe_layers]

    def encode(self, text: str) -> torch.Tensor:
        """(n,) character ids of `text` on this trainer's device (language task)."""
        return torch.as_tensor(self.stream.encode(text), device=self.device)

    # -- views ----------------------------------------------------------------------------------------------
    def snapshot(self, grid_size: int = 48) -> Snapshot:
        """Everything the views draw, as numpy arrays (cheap to keep a timeline); grid_size=0: no routing-map grid."""
        return take_snapshot(self, grid_size=grid_size)

    # -- checkpoints ------------------------------------------------------------------------------------------
    def save_checkpoint(self, path: str | Path) -> None:
        """State dict + the three configs as JSON text; loadable with weights_only=True."""
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "configs": json.dumps({"model": self.model_config.to_dict(), "data": self.data_config.to_dict(),
                                       "train": asdict(self.train_config)}),
                "step": self.step_count,
                "state_dict": self.model.state_dict(),
            },
            path,
        )

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "auto") -> Trainer:
        """Rebuild a trainer from save_checkpoint's file. Anything else is refused with a clear ValueError."""
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle errors, truncated files, random bytes
            raise ValueError(f"{path} is not a MoE Playground checkpoint (torch.load failed: {err})") from None
        if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a MoE Playground checkpoint (no '{CHECKPOINT_FORMAT}' marker)")
        if blob.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path} has checkpoint version {blob.get('version')}; this code reads version 1")
        try:
            configs = json.loads(blob["configs"])
            model = ModelConfig.from_dict(configs["model"])
            data = DataConfig.from_dict(configs["data"])
            train = TrainConfig(**{**configs["train"], "device": device})
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path} has an invalid configuration: {err}") from None
        trainer = cls(model, data, train)
        try:
            trainer.model.load_state_dict(blob["state_dict"])
        except (RuntimeError, KeyError) as err:
            raise ValueError(f"{path}: the weights do not fit the configuration: {err}") from None
        trainer.step_count = int(blob.get("step", 0))
        return trainer
