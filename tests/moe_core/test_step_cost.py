"""The step-time estimate that warns before a learner starts a model too large for the server."""

from __future__ import annotations

import pytest

from moe_core.training.settings import PlaygroundSettings
from moe_core.training.step_cost import SLOW_STEP_MS, estimate_step_ms, matmul_flops_per_second, slow_step_warning

RATE = 1.4e11  # a fixed matmul rate (FLOP/s), as measured on a 2-core CI machine, so the tests do not time anything
OVERSIZE = dict(n_experts=64, top_k=64, batch_size=1024, expert_hidden=256, n_layers=4)  # issue #13's URL


def test_the_default_is_fast_and_the_oversize_link_is_slow():
    assert estimate_step_ms(PlaygroundSettings(), RATE) < 10
    assert estimate_step_ms(PlaygroundSettings(**OVERSIZE), RATE) > 4 * SLOW_STEP_MS


@pytest.mark.parametrize("field, small, large", [("n_experts", 8, 32), ("top_k", 1, 4), ("batch_size", 64, 1024),
                                                 ("expert_hidden", 16, 256), ("n_layers", 1, 4)])
def test_more_work_costs_more_time(field, small, large):
    base = dict(n_experts=32, top_k=2)
    assert (estimate_step_ms(PlaygroundSettings(**{**base, field: small}), RATE)
            < estimate_step_ms(PlaygroundSettings(**{**base, field: large}), RATE))


def test_language_counts_every_character_of_the_batch():
    points = estimate_step_ms(PlaygroundSettings(batch_size=1024, expert_hidden=256), RATE)
    text = estimate_step_ms(PlaygroundSettings(dataset="tokens", batch_size=1024, expert_hidden=256), RATE)
    assert text == pytest.approx(points, rel=0.05)  # 1024 characters = 16 windows of 64


def test_dense_routers_run_every_expert():
    topk = estimate_step_ms(PlaygroundSettings(n_experts=32, top_k=2, expert_hidden=256, batch_size=1024), RATE)
    dense = estimate_step_ms(PlaygroundSettings(router="dense", n_experts=32, expert_hidden=256, batch_size=1024),
                             RATE)
    assert dense > 8 * topk


def test_warning_names_the_time_and_what_to_change():
    assert slow_step_warning(PlaygroundSettings()) is None
    text = slow_step_warning(PlaygroundSettings(**OVERSIZE))
    assert text is not None and "s per training step" in text and "Fewer experts" in text


def test_the_machine_rate_is_measured_once_and_plausible():
    rate = matmul_flops_per_second()
    assert 1e8 < rate < 1e14
    assert matmul_flops_per_second() == rate  # cached for the process
