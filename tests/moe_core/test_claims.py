"""Claims about the library that no lesson makes. The claims the lessons make (collapse without balancing, regime
ownership, the bias router, hash against learned routing on text, ...) are checked with each lesson's own
settings, seeds and budget, on both compute paths, by tests/lessons/test_lesson_claims.py; they are not
repeated here with other settings.
"""

from __future__ import annotations

import numpy as np
import pytest

from moe_core.training.settings import PlaygroundSettings
from moe_core.training.trainer import Trainer

pytestmark = pytest.mark.slow


def test_raising_the_capacity_factor_lowers_drops_monotonically():
    # The Playground's model (spirals, E = 8, k = 2) trained 300 steps without balancing, so that the experts'
    # loads are unequal; then each capacity factor applied live to the same 20 batches, with the weights held
    # still (lr 1e-9), so only the capacity changes between the rows.
    model, data, train = PlaygroundSettings(aux_loss_coef=0.0).to_configs()
    t = Trainer(model, data, train)
    t.step(300)
    state = {k: v.clone() for k, v in t.model.state_dict().items()}
    dropped = []
    for cf in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0):
        t.model.load_state_dict(state)
        t.set_hyperparameters(capacity_factor=cf, lr=1e-9)  # measure routing, don't move the weights
        t.batch_generator.manual_seed(123)
        dropped.append(float(np.mean([r["dropped_frac"] for r in t.step(20)])))
    assert all(a > b for a, b in zip(dropped, dropped[1:], strict=False) if a > 0), dropped
    assert dropped[0] > dropped[-1]
