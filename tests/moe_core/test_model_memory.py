"""moe_core.real_models.model_memory: total and active parameters of real MoE models from their published configs."""

from __future__ import annotations

import pytest

from moe_core.real_models.model_memory import (
    MODEL_BY_NAME,
    MODELS,
    Attention,
    LatentAttention,
    ModelSpec,
    memory_table,
    parameter_budget,
    weight_memory_gb,
)

TOLERANCE = 0.03  # the papers round their totals (47B, 13B, 1.3B): a few percent


@pytest.mark.parametrize("spec", MODELS, ids=lambda s: s.name)
def test_computed_totals_match_the_papers(spec):
    budget = parameter_budget(spec)
    assert budget["total"] / 1e9 == pytest.approx(spec.stated_total, rel=TOLERANCE)
    assert budget["active"] / 1e9 == pytest.approx(spec.stated_active, rel=TOLERANCE)
    assert spec.source and "arXiv:" in spec.source


def test_mixtral_matches_its_unrounded_figures():
    """Mistral AI's announcement gives 46.7B total and 12.9B per token; the arithmetic lands on both."""
    budget = parameter_budget(MODEL_BY_NAME["Mixtral 8x7B"])
    assert round(budget["total"] / 1e9, 1) == 46.7
    assert round(budget["active"] / 1e9, 1) == 12.9


def test_active_counts_k_of_the_routed_experts_and_every_shared_one():
    base = ModelSpec("toy", d_model=8, n_layers=2, vocab=10, attention=Attention(2, 2, 4), n_experts=4, top_k=1,
                     expert_hidden=16)
    b = parameter_budget(base)
    expert = 3 * 8 * 16
    assert b["routed_experts"] == 2 * 4 * expert and b["active_routed"] == 2 * 1 * expert
    assert b["total"] - b["active"] == 2 * 3 * expert  # the 3 experts per layer a token does not use
    shared = parameter_budget(ModelSpec(**{**vars(base), "shared_hidden": 16}))
    assert shared["total"] - b["total"] == shared["active"] - b["active"] == 2 * expert  # always active
    every = parameter_budget(ModelSpec(**{**vars(base), "top_k": 4}))
    assert every["total"] == every["active"]  # k = E: a dense mixture, nothing is idle


def test_dense_layers_replace_moe_layers():
    spec = MODEL_BY_NAME["DeepSeek-V3"]
    b = parameter_budget(spec)
    assert b["dense_ffn"] == 3 * 3 * 7168 * 18432
    assert b["routed_experts"] == 58 * 256 * 3 * 7168 * 2048


def test_attention_formulas():
    assert Attention(32, 8, 128).params(4096) == 4096 * 4096 * 2 + 2 * 4096 * 1024  # q, o full; k, v grouped
    assert Attention(2, 2, 4, bias=True).params(8) == 4 * 8 * 8 + 3 * 8
    mla = LatentAttention(1, q_rank=2, kv_rank=3, nope_dim=4, rope_dim=5, v_dim=6)
    d = 7
    expected = (d * 2 + 2 + 2 * (4 + 5)) + (d * (3 + 5) + 3 + 3 * (4 + 6)) + 6 * d
    assert mla.params(d) == expected


def test_memory_follows_the_total_and_the_format():
    assert weight_memory_gb(10**9, "bfloat16") == 2.0
    assert weight_memory_gb(10**9, "float32") == 4.0
    with pytest.raises(ValueError, match="dtype='int3': allowed float32, bfloat16, fp8"):
        weight_memory_gb(1, "int3")
    rows = memory_table()
    assert [r["model"] for r in rows] == [m.name for m in MODELS]
    for row in rows:
        assert 0 < row["active_share"] < 1
        assert row["weights_gb"] == pytest.approx(2 * row["total_b"])
    deepseek = next(r for r in rows if r["model"] == "DeepSeek-V3")
    assert deepseek["weights_gb"] > 1300  # no single 80 GB accelerator holds it: expert parallelism
    assert deepseek["active_share"] < 0.06
