"""Snapshot: what every view of the app draws, taken from a Trainer at one step, as plain numpy arrays.

Keeping views fed by snapshots (never by the live model) is what lets the UI scrub a timeline, compare
two runs, and test figure builders on crafted data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from moe_core.layer import metrics
from moe_core.layer.moe_layer import RoutingInfo
from moe_core.training.datasets import PLOT_RANGE


class Observed(Protocol):
    """What a snapshot reads from a Trainer: its public read API (moe_core.training.trainer.Trainer), so this module
    and the trainer's do not import each other."""

    task: str
    step_count: int
    diverged: str | None
    typical_step_ms: float
    last_infos: list[RoutingInfo]
    model_config: Any  # ModelConfig
    data_config: Any  # DataConfig
    dataset: Any  # PointDataset | None
    stream: Any  # TokenStream | None

    def held_out(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def evaluate(self, inputs: Any) -> tuple[torch.Tensor, list[RoutingInfo]]: ...

    def task_loss(self, out: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def router_biases(self) -> list[torch.Tensor | None]: ...

    def encode(self, text: str) -> torch.Tensor: ...

PROBE_POINTS = 48  # fixed probe set for the probabilities heatmap
TOP_TOKENS = 6  # characters listed per expert in language mode


@dataclass
class LayerView:
    """One MoE layer at one step."""

    tokens_per_expert: np.ndarray  # (E,) last training batch, before drops
    kept_per_expert: np.ndarray  # (E,)
    capacity: int | None  # C of the last training batch
    probe_probs: np.ndarray  # (P, E) router probabilities of the probe points / characters
    probe_expert_index: np.ndarray  # (P, K)
    probe_combine: np.ndarray  # (P, K)
    probe_dropped: np.ndarray  # (P, K) bool
    group_expert_counts: np.ndarray  # (G, E) per class/regime/domain on the test set: see group_counts_basis
    co_activation: np.ndarray  # (E, E) P(j chosen | i chosen)
    mutual_information: float  # nats, expert vs group, test set
    grid_probs: np.ndarray | None = None  # (Gy, Gx, E) router probabilities over the input plane
    grid_top2: np.ndarray | None = None  # (Gy, Gx, 2) first and second choice over the plane
    grid_selection: np.ndarray | None = None  # (Gy, Gx, E) sigmoid_bias: the biased scores that pick experts
    probe_selected: np.ndarray | None = None  # (P, K) bool: slot is a real assignment (expert_choice varies)
    probe_tokens: list[str] | None = None  # language mode: the characters of the probe rows
    probe_text_experts: np.ndarray | None = None  # (n_chars,) top-1 expert of each probe character
    top_tokens: list[list[tuple[str, int]]] | None = None  # per expert: most frequent characters routed to it
    group_counts_basis: str = "slots"  # what group_expert_counts counts: kept routing slots, or "first_choice"
    # (each token's top-1 router probability) when every token runs every expert (see group_counts)
    left_behind: int = 0  # tokens of the last training batch that kept no slot (metrics.left_behind_count):
    # expert choice's tokens that no expert picked, or token choice's tokens whose every slot overflowed


@dataclass
class Snapshot:
    step: int
    task: str  # classification | regression | language
    router: str
    n_experts: int
    top_k: int
    batch_tokens: int  # tokens in the last training batch (T of the capacity formula)
    layers: list[LayerView]
    test_loss: float
    test_quality: float  # accuracy, or MSE for regression
    step_ms: float  # median wall time of the last 10 training steps (Trainer.typical_step_ms)
    parameters: dict[str, int]
    flops: dict[str, float]
    group_names: list[str]
    diverged: str | None = None
    grid_x: np.ndarray | None = None  # (Gx,) plane coordinates for the routing map
    grid_y: np.ndarray | None = None  # (Gy,); a single 0 for 1-D inputs
    grid_prediction: np.ndarray | None = None  # (Gy, Gx) class id or regression value
    probe_x: np.ndarray | None = None  # (P, D) the probe points
    probe_group: np.ndarray | None = None  # (P,)
    probe_text: str | None = None  # language mode
    probe_text_domains: np.ndarray | None = None  # (n_chars,)
    points_x: np.ndarray | None = None  # (N, D) test points drawn on the map
    points_y: np.ndarray | None = None  # (N,) their labels / targets
    extra: dict = field(default_factory=dict)


@torch.no_grad()
def take_snapshot(trainer: Observed, grid_size: int = 48) -> Snapshot:
    """grid_size: the routing map's grid is grid_size x grid_size points of the input plane. 0 leaves the grid out
    (every grid_* field None): it is the costliest part of a snapshot of points, a forward pass over 2,304 points at
    48 x 48, several times the test set."""
    cfg = trainer.model_config.moe
    if trainer.task == "language":
        snap = _language_snapshot(trainer)
    else:
        snap = _points_snapshot(trainer, grid_size)
    last = trainer.last_infos
    for i, view in enumerate(snap.layers):
        if i < len(last):
            view.tokens_per_expert = last[i].tokens_per_expert.cpu().numpy()
            view.kept_per_expert = last[i].kept_per_expert.cpu().numpy()
            view.capacity = last[i].capacity
            view.left_behind = metrics.left_behind_count(last[i].dropped, last[i].selected)
            snap.batch_tokens = last[i].n_tokens
    if last and snap.layers and cfg.router not in ("expert_choice", "soft"):
        snap.extra["batch_slots"] = BatchSlots.of(last[0], cfg)
    snap.parameters = metrics.parameter_counts(cfg)
    snap.flops = metrics.flops_per_token(cfg, n_tokens=snap.batch_tokens or None)
    return snap


@dataclass(frozen=True)
class BatchSlots:
    """snapshot.extra["batch_slots"]: the last training batch's routing slots, detached (no autograd graph kept),
    for the "Scaling out" view, which computes its exchange table from them only when it is drawn
    (moe_core.figures.scaling.scaling_data): a tick pays for no pandas table, and a snapshot needs no
    torch.distributed code (moe_core.scale_out)."""

    expert_index: torch.Tensor  # (T, K) long
    selected: torch.Tensor  # (T, K) bool
    dropped: torch.Tensor  # (T, K) bool
    n_tokens: int
    config: Any  # the layer's MoEConfig

    @classmethod
    def of(cls, info: RoutingInfo, config: Any) -> BatchSlots:
        return cls(info.expert_index.detach().clone(), info.selected.detach().clone(),
                   info.dropped.detach().clone(), info.n_tokens, config)


def group_counts(info: RoutingInfo, groups: torch.Tensor, n_groups: int) -> tuple[torch.Tensor, str]:
    """(G, E) table of the specialization view and I(expert; group), and what it counts.

    Normally the kept routing slots by group and expert ("slots"). When every token keeps a slot on every
    expert (dense, soft, top-k with k = E and nothing dropped) that table is each group's size times a uniform
    row: it reads "no specialization" (I = 0) however sharply the gate splits the input. Then each token's first
    choice, the argmax of its router probabilities, is counted instead ("first_choice"): the routing map's
    top-1 colours and lesson_checks.ownership.
    """
    if every_expert_runs(info):
        top1 = first_choice(info)[:, None]  # (T, 1)
        return metrics.expert_label_counts(top1, groups, info.n_experts, n_groups), "first_choice"
    mask = info.selected & ~info.dropped
    return metrics.expert_label_counts(info.expert_index, groups, info.n_experts, n_groups, mask), "slots"


def every_expert_runs(info: RoutingInfo) -> bool:
    """Every token keeps a slot on every expert (dense, soft, top-k with k = E and nothing dropped)."""
    mask = info.selected & ~info.dropped
    return mask.shape[1] == info.n_experts and bool(mask.all())


def first_choice(info: RoutingInfo) -> torch.Tensor:
    """(T,) each token's first-choice expert: its first slot, or the argmax of its router probabilities when
    every expert runs (the slots then list the experts in index order, so the first slot would always be E0)."""
    if every_expert_runs(info):
        return info.router_probs.argmax(-1)
    return info.expert_index[:, 0]


def _layer_views(infos: list[RoutingInfo], groups: torch.Tensor, n_groups: int, probe: slice) -> list[LayerView]:
    views = []
    for info in infos:
        counts, basis = group_counts(info, groups.reshape(-1), n_groups)
        E = info.n_experts
        views.append(
            LayerView(
                tokens_per_expert=np.zeros(E, dtype=np.int64),
                kept_per_expert=np.zeros(E, dtype=np.int64),
                capacity=None,
                probe_probs=info.router_probs[probe].cpu().numpy(),
                probe_expert_index=info.expert_index[probe].cpu().numpy(),
                probe_combine=info.combine_weights[probe].cpu().numpy(),
                probe_dropped=info.dropped[probe].cpu().numpy(),
                probe_selected=info.selected[probe].cpu().numpy(),
                group_expert_counts=counts.cpu().numpy(),
                co_activation=metrics.co_activation(info.expert_index, E, info.selected).cpu().numpy(),
                mutual_information=metrics.mutual_information(counts),
                group_counts_basis=basis,
            )
        )
    return views


def _points_snapshot(trainer: Observed, grid_size: int) -> Snapshot:
    ds, cfg = trainer.dataset, trainer.model_config.moe
    x_test, y_test, group_test = trainer.held_out()
    out, infos = trainer.evaluate(x_test)
    loss, quality = trainer.task_loss(out, y_test)
    n_probe = min(PROBE_POINTS, x_test.shape[0])
    views = _layer_views(infos, group_test, ds.n_groups, slice(0, n_probe))
    snap = Snapshot(
        step=trainer.step_count, task=trainer.task, router=cfg.router, n_experts=cfg.n_experts, top_k=cfg.top_k,
        batch_tokens=0, layers=views, test_loss=float(loss), test_quality=float(quality),
        step_ms=trainer.typical_step_ms, parameters={}, flops={}, group_names=list(ds.group_names),
        diverged=trainer.diverged, probe_x=ds.x_test[:n_probe], probe_group=ds.group_test[:n_probe],
        points_x=ds.x_test, points_y=ds.y_test,
    )
    if grid_size > 0:
        _add_map_grid(snap, trainer, grid_size)
    return snap


def _add_map_grid(snap: Snapshot, trainer: Observed, grid_size: int) -> None:
    """The routing map's data: router probabilities, choices and predictions over a grid_size^2 grid of the plane."""
    ds, cfg = trainer.dataset, trainer.model_config.moe
    lo, hi = PLOT_RANGE
    gx = np.linspace(lo, hi, grid_size, dtype=np.float32)
    gy = gx if ds.input_dim >= 2 else np.zeros(1, dtype=np.float32)
    mesh = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)[:, : ds.input_dim]  # (Gy*Gx, D)
    grid_out, grid_infos = trainer.evaluate(mesh)
    shape = (len(gy), len(gx))
    biases = trainer.router_biases()
    for i, (view, info) in enumerate(zip(snap.layers, grid_infos, strict=True)):
        probs = info.router_probs.cpu().numpy()
        view.grid_probs = probs.reshape(*shape, -1)
        ranking = probs
        if cfg.router == "sigmoid_bias" and biases[i] is not None:  # selection = sigmoid(logits) + bias
            ranking = (torch.sigmoid(info.router_logits) + biases[i]).cpu().numpy()
            view.grid_selection = ranking.reshape(*shape, -1)
        view.grid_top2 = np.argsort(-ranking, axis=-1)[:, :2].reshape(*shape, min(2, probs.shape[1]))
    if trainer.task == "classification":
        snap.grid_prediction = grid_out.argmax(-1).cpu().numpy().reshape(shape)
    else:
        snap.grid_prediction = grid_out.squeeze(-1).cpu().numpy().reshape(shape)
    snap.grid_x, snap.grid_y = gx, gy


def _language_snapshot(trainer: Observed) -> Snapshot:
    from moe_core.training.datasets import probe_text

    cfg, S = trainer.model_config.moe, trainer.model_config.context
    inputs, targets, domains = trainer.held_out()  # (W, S) each
    out, infos = trainer.evaluate(inputs)
    loss, quality = trainer.task_loss(out, targets)
    views = _layer_views(infos, domains, len(trainer.stream.domain_names), slice(0, S))
    probe_chars = [trainer.stream.vocab[int(i)] for i in inputs[0, :S].tolist()]
    for view in views:
        view.probe_tokens = probe_chars
    text, text_domains = probe_text(trainer.data_config.seed)
    ids = trainer.encode(text)
    chunks = [ids[i : i + S] for i in range(0, len(ids), S)]
    per_layer: list[list[np.ndarray]] = [[] for _ in views]
    for chunk in chunks:
        _, chunk_infos = trainer.evaluate(chunk[None])
        for li, info in enumerate(chunk_infos):
            per_layer[li].append(first_choice(info).cpu().numpy())
    flat_ids = inputs.reshape(-1).cpu().numpy()
    vocab = trainer.stream.vocab
    for li, (view, info) in enumerate(zip(views, infos, strict=True)):
        view.probe_text_experts = np.concatenate(per_layer[li])
        top1 = first_choice(info).cpu().numpy()
        view.top_tokens = []
        for e in range(cfg.n_experts):
            chars, counts = np.unique(flat_ids[top1 == e], return_counts=True)
            order = np.argsort(-counts)[:TOP_TOKENS]
            view.top_tokens.append([(vocab[int(chars[j])], int(counts[j])) for j in order])
    return Snapshot(
        step=trainer.step_count, task="language", router=cfg.router, n_experts=cfg.n_experts, top_k=cfg.top_k,
        batch_tokens=0, layers=views, test_loss=float(loss), test_quality=float(quality),
        step_ms=trainer.typical_step_ms, parameters={}, flops={}, group_names=list(trainer.stream.domain_names),
        diverged=trainer.diverged, probe_text=text, probe_text_domains=np.asarray(text_domains),
        probe_group=domains[0].cpu().numpy(),
    )
