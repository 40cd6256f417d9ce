"""GShard's top-2 router (gshard_top2) in the app: the Playground's Router box, its URL, and the Reference page."""

from __future__ import annotations

from apptools import fresh, metric, warnings_text
from streamlit.testing.v1 import AppTest


def _widget(at: AppTest, key: str):
    return next(w for kind in ("selectbox", "slider", "toggle") for w in getattr(at, kind) if w.key == key)


def test_pick_gshard_on_the_playground_and_train():
    at = fresh()
    _widget(at, "ctl_top_k").set_value(4).run()
    router = _widget(at, "ctl_router")
    assert "GShard top-2 (Lepikhin 2020)" in router.options
    router.set_value("gshard_top2").run()
    assert not at.exception
    sess = at.session_state["play"]
    assert sess.settings.router == "gshard_top2" and sess.settings.top_k == 2
    assert not any(w.key == "ctl_top_k" for w in at.slider), "top-k is fixed at 2: no slider"
    assert any("GShard's router is top-2" in c.value for c in at.caption)
    at.button(key="play_step").click().run()
    assert not at.exception and metric(at, "Step") == "1"
    assert at.query_params["router"] == ["gshard_top2"] or at.query_params["router"] == "gshard_top2"
    _widget(at, "ctl_router").set_value("softmax_topk").run()
    assert sess.settings.top_k == 4 and "Top-k is back to 4" in warnings_text(at)


def test_a_url_with_another_k_is_corrected_with_a_message():
    at = fresh({"router": "gshard_top2", "top_k": "3"})
    assert "top-k set to 2" in warnings_text(at)
    assert at.session_state["play"].settings.top_k == 2
    at.button(key="play_step").click().run()
    assert not at.exception and metric(at, "Step") == "1"


def test_the_experts_slider_starts_at_two_under_gshard():
    at = fresh({"router": "gshard_top2"})
    experts = _widget(at, "ctl_n_experts")
    assert experts.min == 2


def test_reference_page_prints_gshard_rule_and_code():
    at = fresh(page="app_pages/reference.py")
    text = "\n".join(c.value for c in at.code)
    assert "Lepikhin et al. 2020" in text and "2 * g2 > u" in text
    at.toggle(key="ref_code_gshard_top2").set_value(True).run()
    assert not at.exception
    assert "class GShardTop2Router" in "\n".join(c.value for c in at.code)
