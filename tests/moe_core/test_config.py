"""MoEConfig validation messages and exact round trips."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moe_core import ROUTERS, MoEConfig
from moe_core.layer.config import CAUSAL_ROUTERS, FORCED_TOP_K, LIVE_FIELDS, ROUTER_CATALOGUE


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("n_experts", 0, "n_experts=0"),
        ("n_experts", 257, "from 1 to 256"),
        ("top_k", 9, "top_k=9"),  # > n_experts (8)
        ("top_k", 0, "from 1 to 8"),
        ("capacity_factor", 0.0, "capacity_factor=0.0"),
        ("capacity_factor", -1.0, "or None for dropless"),
        ("capacity_factor", math.nan, "capacity_factor=nan"),
        ("capacity_factor", math.inf, "capacity_factor=inf"),
        ("router", "magic", "one of softmax_topk"),
        ("overflow_policy", "random", "position, probability"),
        ("aux_loss_coef", -0.1, "aux_loss_coef"),
        ("d_model", "64", "d_model='64'"),
        ("d_model", 2.5, "an integer"),
        ("normalize_topk", 1, "true or false"),
        ("n_shared_experts", -1, "n_shared_experts"),
        ("router_noise", math.inf, "router_noise"),
    ],
)
def test_each_bad_value_names_field_value_and_range(field, value, fragment):
    with pytest.raises(ValueError) as err:
        MoEConfig(**{field: value})
    message = str(err.value)
    assert field in message
    assert fragment in message
    assert "allowed" in message or "must" in message


def test_switch_requires_top1_with_a_reason():
    with pytest.raises(ValueError, match="exactly one expert"):
        MoEConfig(router="switch", top_k=2)


def test_integral_floats_are_accepted_as_ints():
    cfg = MoEConfig(n_experts=8.0, top_k=2.0)
    assert cfg.n_experts == 8 and isinstance(cfg.n_experts, int)


def test_unknown_fields_are_refused():
    with pytest.raises(ValueError, match="unknown MoEConfig field"):
        MoEConfig.from_dict({"n_expert": 4})


def test_replace_validates():
    cfg = MoEConfig()
    with pytest.raises(ValueError, match="top_k"):
        cfg.replace(n_experts=1)  # top_k=2 no longer fits


configs = st.builds(
    lambda E, k_frac, cf, router, norm, pol, aux, z, noise, shared, rate, slots: MoEConfig(
        n_experts=max(E, 2) if router == "gshard_top2" else E,
        top_k=FORCED_TOP_K.get(router, max(1, min(E, round(k_frac * E)))),
        capacity_factor=cf,
        router=router,
        normalize_topk=norm,
        overflow_policy=pol,
        aux_loss_coef=aux,
        z_loss_coef=z,
        router_noise=noise,
        n_shared_experts=shared,
        bias_update_rate=rate,
        slots_per_expert=slots,
    ),
    st.integers(1, 256),
    st.floats(0, 1),
    st.one_of(st.none(), st.floats(0.01, 64)),
    st.sampled_from(ROUTERS),
    st.booleans(),
    st.sampled_from(["position", "probability"]),
    st.floats(0, 100),
    st.floats(0, 100),
    st.floats(0, 10),
    st.integers(0, 16),
    st.floats(0, 1),
    st.integers(1, 64),
)


@settings(max_examples=200, deadline=None)
@given(configs)
def test_round_trip_through_json_is_exact(cfg):
    again = MoEConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.to_dict() == cfg.to_dict()


def _readme_router_rows() -> list[tuple[str, str, str]]:
    """The README's router table, as (name, paper, what it does) rows."""
    lines = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| router | paper | what it does |") + 2  # skip the |---| row
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        name, paper, does = (cell.strip() for cell in line.strip("|").split("|"))
        rows.append((name.strip("`"), paper, does))
    return rows


def test_readme_lists_exactly_the_catalogues_routers_and_citations():
    assert _readme_router_rows() == [(r.name, r.paper, r.does) for r in ROUTER_CATALOGUE]


def test_the_catalogue_is_the_one_source_of_router_facts():
    assert tuple(r.name for r in ROUTER_CATALOGUE) == ROUTERS
    assert FORCED_TOP_K == {"switch": 1, "gshard_top2": 2}
    assert set(CAUSAL_ROUTERS) == set(ROUTERS) - {"expert_choice", "soft"}
    for r in ROUTER_CATALOGUE:
        assert r.every_expert or r.forced_top_k is not None or not r.k_caption, r.name
        assert r.k_caption or not (r.every_expert or r.forced_top_k is not None), r.name


@pytest.mark.parametrize("router", [r for r in ROUTER_CATALOGUE if r.forced_top_k is not None], ids=str)
def test_a_router_whose_paper_fixes_k_refuses_another_k_and_too_few_experts(router):
    MoEConfig(router=router.name, top_k=router.forced_top_k)
    with pytest.raises(ValueError, match=f"top_k must be {router.forced_top_k}"):
        MoEConfig(router=router.name, top_k=router.forced_top_k % 2 + 1)
    if router.min_experts > 1:
        with pytest.raises(ValueError, match=f"n_experts must be at least {router.min_experts}"):
            MoEConfig(router=router.name, n_experts=router.min_experts - 1, top_k=1)


def test_the_layer_uses_the_configs_live_fields():
    from moe_core.layer import moe_layer

    assert moe_layer.LIVE_FIELDS == LIVE_FIELDS  # the layer imports them from config.py
