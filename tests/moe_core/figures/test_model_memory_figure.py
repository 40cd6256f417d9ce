"""The memory-vs-compute view: one pair of bars per real model, from moe_core.real_models.model_memory."""

from __future__ import annotations

from figtools import all_text, assert_valid

from moe_core.figures import model_memory
from moe_core.figures.cost import DENSE_COLOR, MOE_COLOR
from moe_core.real_models.model_memory import MODELS, memory_table


def test_bars_are_the_table():
    fig = model_memory()
    assert_valid(fig)
    total, active = fig.data
    rows = memory_table()
    assert list(total.y) == [r["total_b"] for r in rows] and list(active.y) == [r["active_b"] for r in rows]
    assert total.marker.color == DENSE_COLOR and active.marker.color == MOE_COLOR
    assert len(total.x) == len(MODELS) and "DeepSeek-V3" in total.x[-1]
    assert fig.layout.yaxis.type == "log"
    assert "1,342 GB" in total.text[-1]  # 671B parameters x 2 bytes


def test_format_changes_the_gigabytes_not_the_counts():
    bf16, fp32 = model_memory(dtype="bfloat16"), model_memory(dtype="float32")
    assert list(bf16.data[0].y) == list(fp32.data[0].y)
    assert "93.4 GB" in bf16.data[0].text[0] and "187 GB" in fp32.data[0].text[0]
    assert "4 bytes per parameter" in all_text(fp32)
