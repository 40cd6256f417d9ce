"""The Scaling out view shows exactly what ep_bench's accounting implies for the batch."""

from __future__ import annotations

import numpy as np
import pytest
from figtools import HALF_WIDTH_PX, assert_panel_titles_fit

from moe_core.figures import scaling_out
from moe_core.figures.scaling import scaling_data
from moe_core.scale_out.ep_traffic import implied_traffic
from moe_core.training.settings import PlaygroundSettings
from moe_core.training.trainer import Trainer


def _snap(**settings):
    model, data, train = PlaygroundSettings(**{"batch_size": 64, "expert_hidden": 16, **settings}).to_configs()
    t = Trainer(model, data, train)
    t.step(3)
    return t, t.snapshot(grid_size=8)


def test_matrix_and_bytes_match_the_routing():
    t, snap = _snap(n_experts=8, top_k=2, capacity_factor=1.0)
    fig = scaling_out(snap)
    heat, sent, recv, wait = fig.data
    info = t.last_infos[0]
    kept = (~info.dropped & info.selected).sum().item()
    assert np.asarray(heat.z).sum() == kept, "every kept (token, expert) slot appears once in the matrix"
    frame = implied_traffic(info, t.model_config.moe, 4)
    np.testing.assert_allclose(np.asarray(sent.y) * 1024, frame["bytes_sent"])
    np.testing.assert_allclose(np.asarray(recv.y) * 1024, frame["bytes_recv"])
    assert len(heat.x) == 4


def test_world_size_divides_the_experts_and_non_causal_routers_get_a_message():
    _, snap = _snap(n_experts=6, top_k=2)
    assert scaling_data(snap)["world_size"] == 2
    _, snap = _snap(n_experts=4, top_k=1, router="expert_choice")
    fig = scaling_out(snap)
    assert "decide over the whole batch" in fig.layout.annotations[0].text


def test_the_fast_figure_is_valid_plotly():
    import plotly.graph_objects as go

    _, snap = _snap(n_experts=8, top_k=2)
    go.Figure(scaling_out(snap).to_dict())  # full validation: raises on any invalid property


@pytest.mark.parametrize("width", [HALF_WIDTH_PX, 1300])
def test_panels_fit_a_half_width_chart(width):
    # at half width the side legend left each panel ~150 px: panel titles ran together and "device 0" labels
    # were turned on their side
    _, snap = _snap(n_experts=8, top_k=2, capacity_factor=1.25)
    fig = scaling_out(snap)
    assert fig.layout.legend.orientation == "h"
    assert_panel_titles_fit(fig, width)
    heat, sent = fig.data[0], fig.data[1]
    assert list(heat.x) == list(sent.x) == ["0", "1", "2", "3"]
    assert list(heat.y) == ["0 (E0-1)", "1 (E2-3)", "2 (E4-5)", "3 (E6-7)"]
    assert fig.layout.xaxis.title.text == "to device" and fig.layout.yaxis.title.text == "from device"
