"""The slow, obvious MoE: one token at a time, one expert at a time, plain Python loops.

This is what MoELayer computes, written so that a reader can check it line by line against the papers.
The tests compare MoELayer's vectorized path with it (outputs, losses and gradients), micrograd-style;
the lessons print it. It reads the layer's parameters but none of its routing code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from moe_core.layer.capacity import expert_capacity
from moe_core.layer.moe_layer import MoELayer


def naive_moe(
    layer: MoELayer, x: torch.Tensor, token_ids: torch.Tensor | None = None, noise: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, list[list[tuple[int, float, bool]]]]:
    """Returns (y (T, d), weighted auxiliary loss, per token a list of (expert, weight, kept)).

    noise: the training draw the layer was given: jitter factors (T, d), noisy_topk's N(0, 1) (T, E), Soft MoE's
    (T, S), or gshard_top2's uniforms u (T,). A 2nd expert that lost its draw is not in the token's list."""
    cfg = layer.config
    T, d = x.shape
    E, k = cfg.n_experts, cfg.top_k
    train = layer.training
    if cfg.router == "gshard_top2" and train and noise is None:
        raise ValueError("naive_moe with router 'gshard_top2' in training needs noise: the (T,) uniform draws u "
                         "that decide each token's 2nd expert (pass the same draws to the layer)")
    if cfg.router == "soft":
        return _naive_soft(layer, x, noise)

    # 1. each token's choices: (expert, weight, priority)
    choices: list[list[tuple[int, torch.Tensor, float]]] = []
    probs_rows, logit_rows = [], []
    for t in range(T):
        xt = x[t]
        jitter = noise is not None and train and cfg.router not in ("noisy_topk", "gshard_top2")
        xr = xt * noise[t] if jitter else xt
        if cfg.router == "hash":
            bucket = _bucket(layer, xt, None if token_ids is None else int(token_ids[t]))
            experts = [int(e) for e in layer.router.table[bucket]]
            choices.append([(e, torch.tensor(1.0 / k, dtype=x.dtype), 0.0) for e in experts])
            continue
        if cfg.router_dtype == "bfloat16":  # the router without selective precision: dot products, softmax in bf16
            logits = torch.stack([xr.bfloat16() @ layer.router.weight[e].bfloat16() for e in range(E)])
        else:
            logits = torch.stack([xr @ layer.router.weight[e] for e in range(E)])  # (E,)
        if cfg.router == "noisy_topk":
            std = torch.stack([F.softplus(xt @ layer.router.noise_weight[e]) + 1e-2 for e in range(E)])
            logits = logits + (noise[t] * std if train else 0.0)
        logit_rows.append(logits)
        if cfg.router == "sigmoid_bias":
            scores = torch.sigmoid(logits)
            probs_rows.append(scores / scores.sum())
            biased = [scores[e].item() + layer.router.bias[e].item() for e in range(E)]
            allowed = _best_groups(biased, cfg.n_group, cfg.topk_group)
            order = sorted(allowed, key=lambda e: -biased[e])[:k]
            if not cfg.normalize_topk:
                total = scores.sum()  # s' = s / sum over all experts
            else:
                total = sum(scores[e] for e in order) if k > 1 else 1.0
            scale = cfg.routed_scaling_factor
            choices.append([(e, scores[e] / total * scale, scores[e].item()) for e in order])
            continue
        p = torch.softmax(logits, dim=0)
        probs_rows.append(p)
        if cfg.router == "dense":
            choices.append([(e, p[e], p[e].item()) for e in range(E)])
        elif cfg.router == "noisy_topk":
            order = sorted(range(E), key=lambda e: -logits[e].item())[:k]
            w = torch.softmax(torch.stack([logits[e] for e in order]), dim=0)
            choices.append([(e, w[i], w[i].item()) for i, e in enumerate(order)])
        elif cfg.router == "gshard_top2":  # GShard Algorithm 1, for one token
            e1, e2 = sorted(range(E), key=lambda e: -p[e].item())[:2]  # stable: ties to the lower index
            g1, g2 = p[e1] / (p[e1] + p[e2]), p[e2] / (p[e1] + p[e2])  # normalized before any drop
            slots = [(e1, g1, p[e1].item())]  # the 1st expert always
            if not train or 2 * g2.item() > float(noise[t]):  # the 2nd with probability 2*g2, in training
                slots.append((e2, g2, p[e2].item()))
            choices.append(slots)
        elif cfg.router in ("softmax_topk", "switch"):
            order = sorted(range(E), key=lambda e: -p[e].item())[:k]
            normalize = cfg.normalize_topk and cfg.router != "switch"
            total = sum(p[e] for e in order) if normalize else 1.0
            choices.append([(e, (p[e] / total).to(x.dtype), p[e].item()) for e in order])

    if cfg.router == "expert_choice":  # 1b. experts choose tokens instead
        C = min(T, expert_capacity(T, E, k, cfg.capacity_factor or 1.0))
        picked = {(t, e) for e in range(E) for t in sorted(range(T), key=lambda t: -probs_rows[t][e].item())[:C]}
        choices = [[(e, probs_rows[t][e], 0.0) for e in range(E) if (t, e) in picked] for t in range(T)]

    # 2. capacity: walk the (token, slot) pairs in priority order, keep while the expert has room
    limited = cfg.router in ("softmax_topk", "gshard_top2", "noisy_topk", "switch", "sigmoid_bias")
    C = expert_capacity(T, E, k, cfg.capacity_factor) if limited else None
    # 1st choices first; a slot the token does not have (gshard_top2's 2nd that lost its draw) takes no room
    pairs = [(j, t) for j in range(k if limited else 0) for t in range(T) if j < len(choices[t])]
    if cfg.overflow_policy == "probability":
        pairs.sort(key=lambda jt: -choices[jt[1]][jt[0]][2])  # stable: ties stay in position order
    kept = {(t, j): True for t in range(T) for j in range(len(choices[t]))}
    used = [0] * E
    for j, t in pairs:
        e = choices[t][j][0]
        kept[(t, j)] = C is None or used[e] < C
        used[e] += 1

    # 3. run the experts token by token and mix
    rows, decisions = [], []
    for t in range(T):
        yt = torch.zeros(d, dtype=x.dtype)
        for j, (e, w, _) in enumerate(choices[t]):
            if kept[(t, j)]:
                yt = yt + w * layer.experts.expert(e, x[t : t + 1])[0]
        yt = yt + _shared(layer, x[t])
        rows.append(yt)
        slots = enumerate(choices[t])
        decisions.append([(e, float(torch.as_tensor(w).detach()), kept[(t, j)]) for j, (e, w, _) in slots])
    y = torch.stack(rows)

    # 4. auxiliary losses, from their definitions
    aux = torch.zeros((), dtype=x.dtype)
    if logit_rows:
        z = sum(torch.logsumexp(r, dim=0) ** 2 for r in logit_rows) / T
        aux = aux + cfg.z_loss_coef * z
    if cfg.router in ("softmax_topk", "switch", "sigmoid_bias"):
        counts = [sum(1 for t in range(T) for (e2, _, _) in choices[t] if e2 == e) for e in range(E)]
        P = [sum(probs_rows[t][e] for t in range(T)) / T for e in range(E)]
        aux = aux + cfg.aux_loss_coef * E / (k * T) * sum(counts[e] * P[e] for e in range(E))
    if cfg.router == "gshard_top2":  # GShard: c_e counts FIRST choices only (Algorithm 1), scaled by E^2
        first = [sum(1 for t in range(T) if choices[t][0][0] == e) for e in range(E)]
        P = [sum(probs_rows[t][e] for t in range(T)) / T for e in range(E)]
        aux = aux + cfg.aux_loss_coef * E * sum(first[e] / T * P[e] for e in range(E))
    if cfg.router == "noisy_topk":
        importance = [sum(float(e2 == e) * w for t in range(T) for (e2, w, _) in choices[t]) for e in range(E)]
        load = _naive_noisy_load(layer, x, noise, logit_rows, choices) if train and k < E else [
            torch.tensor(float(sum(1 for t in range(T) for (e2, _, _) in choices[t] if e2 == e))) for e in range(E)
        ]
        aux = aux + cfg.aux_loss_coef * (_cv2(importance) + _cv2(load))
    return y, aux, decisions


def _best_groups(biased: list[float], n_group: int, topk_group: int) -> list[int]:
    """DeepSeek-V3's group limit: the experts of the topk_group groups whose two best biased scores sum highest
    (experts g*E/G ... (g+1)*E/G - 1 form group g; ties go to the lower group)."""
    size = len(biased) // n_group
    groups = [list(range(g * size, (g + 1) * size)) for g in range(n_group)]
    group_score = [sum(sorted((biased[e] for e in members), reverse=True)[:2]) for members in groups]
    best = sorted(range(n_group), key=lambda g: -group_score[g])[:topk_group]
    return [e for g in sorted(best) for e in groups[g]]


def _shared(layer: MoELayer, xt: torch.Tensor) -> torch.Tensor | float:
    """The shared experts on one token (0 without them), times Qwen2-MoE's sigmoid(x W_sg) where gated."""
    if layer.shared is None:
        return 0.0
    out = layer.shared(xt[None])[0]
    if layer.shared_gate is not None:
        out = torch.sigmoid(xt @ layer.shared_gate.weight[0]) * out
    return out


def _bucket(layer: MoELayer, xt: torch.Tensor, token_id: int | None) -> int:
    n_buckets = layer.router.table.shape[0]
    if token_id is not None:
        return token_id % n_buckets
    proj = layer.router.projection
    return sum(2**j for j in range(proj.shape[1]) if float(xt @ proj[:, j]) > 0)


def _naive_noisy_load(layer, x, noise, noisy_rows, choices) -> list[torch.Tensor]:
    """load_i = sum_t P(t, i): the chance i stays in the top k if only its own noise is re-drawn."""
    cfg = layer.config
    E, k = cfg.n_experts, cfg.top_k
    load = [torch.zeros((), dtype=x.dtype) for _ in range(E)]
    for t, noisy in enumerate(noisy_rows):
        xt = x[t]
        for i in range(E):
            clean = xt @ layer.router.weight[i]
            std = F.softplus(xt @ layer.router.noise_weight[i]) + 1e-2
            others = sorted((noisy[e] for e in range(E) if e != i), key=lambda v: v.item(), reverse=True)
            threshold = others[k - 1]  # i is in the top k iff its noisy logit beats the k-th best other
            z = (clean - threshold) / std
            load[i] = load[i] + 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return load


def _cv2(values) -> torch.Tensor:
    v = torch.stack([torch.as_tensor(a) for a in values]).to(torch.float64)
    mean = v.mean()
    return ((v - mean) ** 2).mean() / (mean**2 + 1e-10)


def _naive_soft(layer: MoELayer, x: torch.Tensor, noise):
    """Soft MoE slot by slot: each slot averages tokens, each token averages slot outputs."""
    cfg = layer.config
    T, d = x.shape
    E, p = cfg.n_experts, cfg.slots_per_expert
    S = E * p
    phi = layer.router.slots
    logits = torch.zeros(T, S, dtype=x.dtype)
    for t in range(T):
        for s in range(S):
            logits[t, s] = layer.router.scale * (x[t] / x[t].norm()) @ (phi[s] / phi[s].norm())
            if noise is not None and layer.training and cfg.router_noise > 0:
                logits[t, s] = logits[t, s] + cfg.router_noise * noise[t, s]
    slot_out = []
    for s in range(S):
        weights = torch.softmax(logits[:, s], dim=0)  # over tokens
        slot_in = sum(weights[t] * x[t] for t in range(T))
        slot_out.append(layer.experts.expert(s // p, slot_in[None])[0])
    rows = []
    for t in range(T):
        weights = torch.softmax(logits[t], dim=0)  # over slots
        yt = sum(weights[s] * slot_out[s] for s in range(S))
        rows.append(yt + _shared(layer, x[t]))
    return torch.stack(rows), torch.zeros((), dtype=x.dtype), [[] for _ in range(T)]
