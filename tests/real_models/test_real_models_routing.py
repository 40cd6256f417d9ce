"""The recorded routing is the model's own: the router logits transformers returns with output_router_logits=True,
and the experts and gate weights each family's router module computes from them (read with forward hooks)."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from moe_core.layer import metrics
from moe_core.real_models import FAMILIES, load_model, loaded_models, loading, route_text, specialisation, summary
from moe_core.real_models.tiny import TINY_EXPERTS, TINY_TOP_K

TEXT = "def area(r):\n    return 3.14 * r ** 2\nThe train was late. Das Rad drehte sich wieder. x = 5/6"
SOFTMAX_FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "granitemoe")


def dense(experts: np.ndarray, weights: np.ndarray, n_experts: int) -> np.ndarray:
    """(T, E) matrix of gate weights (0 where an expert was not chosen): compares routings whatever the slot order."""
    out = np.zeros((experts.shape[0], n_experts))
    np.put_along_axis(out, experts, weights, axis=1)
    return out


def module_outputs(loaded, text: str) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """What each router module itself returned (logits, weights, indices) during a plain forward pass."""
    seen: list = []
    hooks = [r.register_forward_hook(lambda mod, args, out: seen.append(tuple(o.detach() for o in out)))
             for r in loaded.routers]
    try:
        with torch.inference_mode():
            loaded.model(**loaded.tokenizer(text, return_tensors="pt"))
    finally:
        for h in hooks:
            h.remove()
    return seen


@pytest.mark.parametrize("model_type", list(FAMILIES))
def test_recorded_routing_is_the_router_modules_own(model_type, tiny_models, tiny_policy):
    loaded = load_model(str(tiny_models[model_type]), tiny_policy)
    routing = route_text(loaded, TEXT)
    own = module_outputs(loaded, TEXT)
    assert len(routing.layers) == len(own) == len(loaded.routers) > 0
    assert routing.n_experts == TINY_EXPERTS and routing.top_k == TINY_TOP_K
    for lr, (logits, weights, indices) in zip(routing.layers, own, strict=True):
        np.testing.assert_allclose(lr.logits, logits.float().numpy(), rtol=1e-5, atol=1e-6)
        assert lr.experts.shape == (len(routing.tokens), TINY_TOP_K)
        np.testing.assert_allclose(dense(lr.experts, lr.weights, TINY_EXPERTS),
                                   dense(indices.long().numpy(), weights.float().numpy(), TINY_EXPERTS),
                                   rtol=1e-5, atol=1e-6)
        assert (np.diff(lr.weights, axis=1) <= 1e-7).all(), "rank 0 must carry the largest gate weight"


@pytest.mark.parametrize("model_type", SOFTMAX_FAMILIES)
def test_softmax_families_pick_the_top_k_of_their_logits(model_type, tiny_models, tiny_policy):
    loaded = load_model(str(tiny_models[model_type]), tiny_policy)
    for lr in route_text(loaded, TEXT).layers:
        top = np.argsort(-lr.logits, axis=1, kind="stable")[:, :TINY_TOP_K]
        assert (np.sort(top, axis=1) == np.sort(lr.experts, axis=1)).all()
        probs = np.exp(lr.logits - lr.logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        chosen = np.take_along_axis(probs, lr.experts, axis=1)
        norm = model_type in ("mixtral", "granitemoe") or loaded.config.norm_topk_prob
        expected = chosen / chosen.sum(axis=1, keepdims=True) if norm else chosen
        np.testing.assert_allclose(lr.weights, expected, rtol=1e-5, atol=1e-6)


def test_dense_layers_have_no_router_and_keep_their_index(tiny_models, tiny_policy):
    for model_type, first in (("qwen3_moe", 1), ("deepseek_v2", 1), ("deepseek_v3", 1), ("mixtral", 0)):
        loaded = load_model(str(tiny_models[model_type]), tiny_policy)
        assert [lr.layer for lr in route_text(loaded, TEXT).layers] == list(range(first, 3))


def test_deepseek_v3_bias_picks_experts_the_plain_top_k_would_not(tiny_models, tiny_policy):
    """The correction bias chooses, the unbiased scores weigh (DeepSeek-V3 §2.1.2): not a plain top-k."""
    loaded = load_model(str(tiny_models["deepseek_v3"]), tiny_policy)
    cfg = loaded.config
    differs = 0
    for lr in route_text(loaded, TEXT).layers:
        scores = 1 / (1 + np.exp(-lr.logits.astype(np.float64)))
        plain = np.sort(np.argsort(-scores, axis=1)[:, :TINY_TOP_K], axis=1)
        differs += int((plain != np.sort(lr.experts, axis=1)).any(axis=1).sum())
        chosen = np.take_along_axis(scores, lr.experts, axis=1)
        expected = chosen / chosen.sum(axis=1, keepdims=True) * cfg.routed_scaling_factor
        np.testing.assert_allclose(lr.weights, expected, rtol=1e-5)
    assert differs > 0


def test_rows_and_summary(tiny_models, tiny_policy):
    loaded = load_model(str(tiny_models["olmoe"]), tiny_policy)
    routing = route_text(loaded, TEXT)
    rows = list(routing.rows())
    T = len(routing.tokens)
    assert len(rows) == len(routing.layers) * T * TINY_TOP_K
    assert set(rows[0]) == {"layer", "position", "token", "rank", "expert", "weight"}
    assert "".join(routing.tokens) == TEXT  # each position shows its own slice of the text
    s = summary(routing)
    for lr, layer in zip(routing.layers, s["layers"], strict=True):
        load = np.bincount(lr.experts.ravel(), minlength=TINY_EXPERTS)
        assert layer["load"] == load.tolist() and sum(layer["load"]) == T * TINY_TOP_K
        assert layer["max_violation"] == pytest.approx(load.max() / load.mean() - 1)
        assert layer["router_entropy"] == pytest.approx(metrics.router_entropy(torch.from_numpy(lr.probs)))
        assert 0 < layer["router_entropy"] <= math.log(TINY_EXPERTS) + 1e-6


def test_specialisation_of_the_shipped_sample(tiny_models, tiny_policy):
    loaded = load_model(str(tiny_models["mixtral"]), tiny_policy)
    spec = specialisation(loaded)
    assert spec.domains == ["code", "maths", "English prose", "German"]
    tokens = [len(loaded.tokenizer(t)["input_ids"]) for t in __import__(
        "moe_core.real_models.routing", fromlist=["sample_texts"]).sample_texts().values()]
    for i, mi in enumerate(spec.mutual_information):
        assert spec.counts[i].sum(axis=1).tolist() == [n * TINY_TOP_K for n in tokens]
        assert mi == pytest.approx(metrics.mutual_information(torch.from_numpy(spec.counts[i])))
        assert 0 <= mi <= math.log(4)


def test_one_shared_copy_per_model(tiny_models, tiny_policy):
    name = str(tiny_models["granitemoe"])
    results = []
    threads = [threading.Thread(target=lambda: results.append(load_model(name, tiny_policy))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(m) for m in results}) == 1
    assert loading.LOADS[name] == 1 and loaded_models()[name] is results[0]
    assert not any(p.requires_grad for p in results[0].model.parameters()) and not results[0].model.training


def test_sample_is_a_few_kb_of_four_domains():
    from moe_core.real_models.routing import sample_texts

    texts = sample_texts()
    assert len(texts) == 4 and all(500 < len(t) < 2000 for t in texts.values())
    assert "def " in texts["code"] and "=" in texts["maths"] and "ü" in texts["German"]


def test_samples_are_packaged():
    assert (Path(loading.__file__).parent / "samples" / "code.txt").is_file()


def test_qwen2_moe_records_its_shared_expert_gate(tiny_models, tiny_policy):
    """sigmoid(shared_expert_gate(x)) of every token, x being the MoE block's own input (captured here apart)."""
    loaded = load_model(str(tiny_models["qwen2_moe"]), tiny_policy)
    blocks = [m for m in loaded.model.modules() if type(m).__name__ == "Qwen2MoeSparseMoeBlock"]
    inputs: list = []
    hooks = [b.register_forward_hook(lambda mod, args, out: inputs.append(args[0].detach())) for b in blocks]
    try:
        routing = route_text(loaded, TEXT)
    finally:
        for h in hooks:
            h.remove()
    for lr, block, x in zip(routing.layers, blocks, inputs, strict=True):
        expected = torch.sigmoid(x.reshape(-1, x.shape[-1]) @ block.shared_expert_gate.weight.T).reshape(-1)
        np.testing.assert_allclose(lr.shared_gate, expected.numpy(), rtol=1e-5)
        assert 0 < lr.summary()["shared_gate_mean"] < 1
    assert route_text(load_model(str(tiny_models["olmoe"]), tiny_policy), TEXT).layers[0].shared_gate is None


def test_moe_families_without_support_are_named_as_moe(tmp_path):
    """DBRX keeps its expert count in a nested ffn_config: refused as unsupported MoE, not as 'not MoE'."""
    import json

    from moe_core.real_models import Policy, RefusedError

    folder = tmp_path / "dbrx"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "dbrx", "ffn_config": {"moe_num_experts": 16}}))
    with pytest.raises(RefusedError, match="The dbrx MoE family is not supported here yet"):
        load_model(str(folder), Policy(allowed=(str(folder),)))
