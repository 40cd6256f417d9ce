"""Run a loaded MoE model on a text and record its own routing, layer by layer.

The router logits come from transformers' documented `output_router_logits=True` (one (tokens, E) tensor of
pre-softmax logits per MoE layer); the experts and gate weights are derived from them by the family's own rule
(families.py). The per-layer numbers reuse the Playground's metrics: load against the fair share k·T/E, MaxVio
(Wang et al. 2024, arXiv:2408.15664), router entropy, co-activation and I(expert; domain) (Muennighoff et al.
2024, OLMoE, arXiv:2409.02060, §5).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

from moe_core.layer import metrics
from moe_core.real_models.loading import LoadedModel, RefusedError

# The shipped multi-domain sample: original text written for this project (samples/*.txt, public domain).
SAMPLE_DOMAINS = {"code": "code.txt", "maths": "maths.txt", "English prose": "prose.txt", "German": "german.txt"}


def sample_texts() -> dict[str, str]:
    """The shipped sample, one text per domain (a few hundred characters each)."""
    root = resources.files("moe_core.real_models") / "samples"
    return {name: (root / file).read_text(encoding="utf-8") for name, file in SAMPLE_DOMAINS.items()}


@dataclass(frozen=True)
class LayerRouting:
    """One MoE layer's routing of T tokens: the model's router logits and what its gate rule makes of them."""

    layer: int  # decoder layer index (dense layers, e.g. DeepSeek's first_k_dense_replace, have no router)
    logits: np.ndarray  # (T, E) float32, as the router returned them
    probs: np.ndarray  # (T, E) the router's distribution over experts (entropy is measured on it)
    experts: np.ndarray  # (T, k) int64, rank 0 = first choice (largest gate weight)
    weights: np.ndarray  # (T, k) float32, the gate weights the model applies to those experts
    shared_gate: np.ndarray | None = None  # (T,) Qwen2-MoE: sigmoid gate of the shared expert, on every token

    def load(self) -> np.ndarray:
        """(E,) routing slots per expert: every token counts once for each of its k experts."""
        return np.bincount(self.experts.reshape(-1), minlength=self.logits.shape[1])

    def summary(self) -> dict:
        load = self.load()
        _, maxvio, usage = metrics.load_summary(load.tolist())
        return {"layer": self.layer, "load": load.tolist(),
                "fair_share": float(load.sum() / len(load)) if len(load) else 0.0,
                "max_violation": maxvio, "router_entropy": metrics.router_entropy(torch.from_numpy(self.probs)),
                "usage_entropy": usage,
                "first_choice_load": np.bincount(self.experts[:, 0], minlength=len(load)).tolist(),
                **({} if self.shared_gate is None else {"shared_gate_mean": float(self.shared_gate.mean())})}

    def co_activation(self) -> np.ndarray:
        """(E, E) P(token also chose j | it chose i) (metrics.co_activation)."""
        return metrics.co_activation(torch.from_numpy(self.experts), self.logits.shape[1]).numpy()


@dataclass(frozen=True)
class Routing:
    model: str
    family: str
    text: str
    tokens: list[str]  # what each position shows: its slice of the text, or the token itself (special tokens)
    n_experts: int
    top_k: int
    layers: list[LayerRouting]
    seconds: float  # wall time of the forward pass

    def rows(self) -> Iterator[dict]:
        """Long format, one row per (layer, position, rank): layer, position, token, rank, expert, weight."""
        for lr in self.layers:
            for t, token in enumerate(self.tokens):
                for r in range(lr.experts.shape[1]):
                    yield {"layer": lr.layer, "position": t, "token": token, "rank": r,
                           "expert": int(lr.experts[t, r]), "weight": float(lr.weights[t, r])}


def check_text(text: str, max_chars: int) -> str:
    if not text.strip():
        raise RefusedError("Type or pick some text first: there is nothing to route.")
    if len(text) > max_chars:
        raise RefusedError(f"The text has {len(text)} characters; this server routes at most {max_chars} at a "
                           "time. Shorten it.")
    return text


def gate(loaded: LoadedModel, index: int, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(experts, weights, probs) of router `index` from its logits, by the family's own rule."""
    return loaded.family.rule(logits, loaded.config, loaded.routers[index])


def route_text(loaded: LoadedModel, text: str, max_chars: int = 2000) -> Routing:
    """One forward pass of `text` (batch 1) with output_router_logits=True; the model is only read."""
    check_text(text, max_chars)
    tok = loaded.tokenizer
    fast = bool(getattr(tok, "is_fast", False))
    enc = tok(text, return_tensors="pt", return_offsets_mapping=fast)
    ids = enc["input_ids"]
    if ids.shape[1] == 0:
        raise RefusedError("The tokenizer turned this text into no tokens: try other text.")
    shared: list[torch.Tensor] = []  # the shared expert gate's own output, read with public forward hooks
    hooks = [g.register_forward_hook(lambda _m, _a, out: shared.append(torch.sigmoid(out.float()).reshape(-1)))
             for g in loaded.shared_gates]
    t0 = time.perf_counter()
    try:
        with torch.inference_mode():
            out = loaded.model(input_ids=ids, attention_mask=enc.get("attention_mask"), output_router_logits=True,
                               use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    seconds = time.perf_counter() - t0
    logits_per_layer = out.router_logits
    if logits_per_layer is None or len(logits_per_layer) != len(loaded.routers):
        raise RuntimeError(f"expected {len(loaded.routers)} router outputs, got "
                           f"{0 if logits_per_layer is None else len(logits_per_layer)}")
    layers = []
    for i, logits in enumerate(logits_per_layer):
        logits = logits.reshape(-1, logits.shape[-1]).float()  # (B*T, E) with B = 1
        experts, weights, probs = gate(loaded, i, logits)
        layers.append(LayerRouting(loaded.router_layers[i], logits.numpy(), probs.numpy(),
                                   experts.numpy().astype(np.int64), weights.float().numpy(),
                                   shared[i].numpy() if len(shared) == len(logits_per_layer) else None))
    offsets = enc["offset_mapping"][0].tolist() if fast else None
    tokens = []
    for t, token_id in enumerate(ids[0].tolist()):
        s, e = offsets[t] if offsets else (0, 0)
        tokens.append(text[s:e] if e > s else str(tok.convert_ids_to_tokens(token_id)))
    return Routing(loaded.name, loaded.family.name, text, tokens, loaded.n_experts, loaded.top_k, layers, seconds)


@dataclass(frozen=True)
class Specialisation:
    """How the shipped multi-domain sample spreads over the experts, per MoE layer."""

    domains: list[str]
    layers: list[int]
    counts: np.ndarray  # (n_layers, domains, E) routing slots
    mutual_information: list[float]  # I(expert; domain) in nats per layer


def specialisation(loaded: LoadedModel, texts: dict[str, str] | None = None) -> Specialisation:
    """Route each domain's text on its own (so no domain sees another's context) and count, per layer, the
    routing slots of each domain on each expert; I(expert; domain) = 0 means no specialisation, ln(domains) is
    the most four domains can give."""
    texts = texts or sample_texts()
    runs = [route_text(loaded, t, max_chars=max(len(t), 1)) for t in texts.values()]
    E, n = loaded.n_experts, len(loaded.routers)
    counts = np.zeros((n, len(texts), E), dtype=np.int64)
    for d, run in enumerate(runs):
        for i, lr in enumerate(run.layers):
            counts[i, d] = lr.load()
    mi = [metrics.mutual_information(torch.from_numpy(counts[i])) for i in range(n)]
    return Specialisation(list(texts), list(loaded.router_layers), counts, mi)


def summary(routing: Routing, spec: Specialisation | None = None) -> dict:
    """Per-layer load, MaxVio and entropy of `routing`; with `spec`, I(expert; domain) of the shipped sample."""
    out = {"model": routing.model, "family": routing.family, "n_tokens": len(routing.tokens),
           "n_experts": routing.n_experts, "top_k": routing.top_k, "forward_seconds": routing.seconds,
           "layers": [lr.summary() for lr in routing.layers]}
    if spec is not None:
        out["sample"] = {"domains": spec.domains, "layers": [
            {"layer": layer, "mutual_information": mi, "counts": spec.counts[i].tolist()}
            for i, (layer, mi) in enumerate(zip(spec.layers, spec.mutual_information, strict=True))]}
    return out
