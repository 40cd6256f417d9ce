"""The claims the app teaches, each run on the real model (issue #3). Budgets are stated per test; the
numbers measured when these were written are in the comments. A claim that fails is reported, not loosened.

Models are the library defaults (d_model 64, SwiGLU experts of width 128), trained with TrainConfig()
(AdamW lr 3e-3, batch 256, one thread).
"""

from __future__ import annotations

import numpy as np
import pytest

from moe_core.config import MoEConfig
from moe_core.datasets import DataConfig
from moe_core.lesson_checks import ownership
from moe_core.models import ModelConfig
from moe_core.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.slow


def train(moe: MoEConfig, data: DataConfig, steps: int, **train) -> Trainer:
    t = Trainer(ModelConfig(moe), data, TrainConfig(seed=data.seed, **train))
    t.step(steps)
    return t


def tail(t: Trainer, column: str, n: int = 100) -> float:
    return float(t.history[column].tail(n).mean())


def test_spirals_eight_experts_top2_reach_95_percent():
    # 600 steps; measured 100 % test accuracy on seeds 0 and 1
    t = train(MoEConfig(n_experts=8, top_k=2), DataConfig(dataset="spirals", seed=0), 600)
    assert t.snapshot().test_quality >= 0.95


def test_each_regime_is_owned_mostly_by_one_expert():
    # dense (1991) mixture of 4 small experts (width 8) on the 1-D multi-regime curve, 1500 steps.
    # Measured ownership (rows: regimes, columns: experts; share of the regime's test points whose top gate
    # is that expert), seed 0: [[0, 0, 1, 0], [.08, .08, .85, 0], [0, 1, 0, 0], [0, 1, 0, 0]].
    # Each regime has a dominant expert (>= 54 % in every run we made); one expert often owns two regimes.
    t = train(MoEConfig(d_model=32, n_experts=4, top_k=1, expert_hidden=8, router="dense", aux_loss_coef=0.0),
              DataConfig(dataset="regimes", seed=0), 1500)
    shares = ownership(t)
    print("ownership matrix (regime x expert):\n", np.round(shares, 2))
    assert shares.max(axis=1).min() >= 0.5


def test_no_balancing_is_clearly_worse_than_aux_001():
    # 1500 steps, spirals, E = 8, k = 2, MaxVio averaged over the last 100 batches, seeds 0, 1, 2.
    # With aux 0.01 the load is not balanced all the time: it has episodes of MaxVio 0.4-1.0 that come and go
    # (a router that rebalances, overshoots and rebalances), so one seed's last 100 steps can land in one.
    # Measured 2026-11-29 with the C kernels: no balancing 2.16 / 1.78 / 2.22, aux 0.01 0.79 / 0.16 / 0.15;
    # with torch ops only (MOE_PLAYGROUND_NATIVE=0): 2.26 / 1.74 / 2.20 against 0.16 / 0.36 / 0.30. Hence
    # the claim as checked: worse at every seed by at least 2x, and by at least 3x on average over the seeds
    # (measured 2.7x-15x per seed, 5.6x and 7.2x on average).
    none, aux = [], []
    for seed in (0, 1, 2):
        data = DataConfig(dataset="spirals", seed=seed)
        none.append(tail(train(MoEConfig(n_experts=8, top_k=2, aux_loss_coef=0.0, router_noise=0.0), data, 1500),
                         "max_vio"))
        aux.append(tail(train(MoEConfig(n_experts=8, top_k=2, aux_loss_coef=0.01), data, 1500), "max_vio"))
    print("MaxVio without balancing", np.round(none, 2), "with aux 0.01", np.round(aux, 2))
    assert all(n >= 2 * a for n, a in zip(none, aux, strict=True)), (none, aux)
    assert np.mean(none) >= 3 * np.mean(aux), (none, aux)


def test_raising_the_capacity_factor_lowers_drops_monotonically():
    # one model trained 300 steps without balancing (so experts are unequal), then each capacity factor
    # applied live on the same batches; 20 steps each
    t = train(MoEConfig(n_experts=8, top_k=2, aux_loss_coef=0.0), DataConfig(dataset="spirals"), 300)
    state = {k: v.clone() for k, v in t.model.state_dict().items()}
    dropped = []
    for cf in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0):
        t.model.load_state_dict(state)
        t.set_hyperparameters(capacity_factor=cf, lr=1e-9)  # measure routing, don't move the weights
        t.batch_generator.manual_seed(123)
        dropped.append(float(np.mean([r["dropped_frac"] for r in t.step(20)])))
    assert all(a > b for a, b in zip(dropped, dropped[1:], strict=False) if a > 0), dropped
    assert dropped[0] > dropped[-1]


def test_sigmoid_bias_without_aux_loss_balances_the_load():
    # DeepSeek-V3 router, aux 0, bias rate 1e-3, 500 steps on spirals, E = 8, k = 2.
    # Measured MaxVio (last 100 batches) 0.18-0.27 with the bias, about 2.5 without it. Bound: <= 0.5.
    data = DataConfig(dataset="spirals", seed=0)
    biased = train(MoEConfig(n_experts=8, top_k=2, router="sigmoid_bias", aux_loss_coef=0.0), data, 500)
    frozen = train(MoEConfig(n_experts=8, top_k=2, router="sigmoid_bias", aux_loss_coef=0.0,
                             bias_update_rate=0.0), data, 500)
    assert tail(biased, "max_vio") <= 0.5
    assert tail(frozen, "max_vio") >= 2 * tail(biased, "max_vio")


def test_a_learned_router_knows_the_domain_better_than_a_hash():
    # tiny LM, 4 experts top-1, 300 steps of 16 windows; MI(expert; domain) on held-out text.
    # Measured about 0.20 nats learned vs 0.06 nats hash.
    data = DataConfig(dataset="tokens", n_samples=2000)
    mi = {}
    for router in ("softmax_topk", "hash"):
        t = Trainer(ModelConfig(MoEConfig(n_experts=4, top_k=1, router=router)), data, TrainConfig(batch_size=16))
        t.step(300)
        mi[router] = t.snapshot().layers[0].mutual_information
    assert mi["softmax_topk"] >= 2 * mi["hash"], mi
