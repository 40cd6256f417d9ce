"""AppTest: the Compare and Reference pages."""

from __future__ import annotations

from apptools import fresh
from streamlit.testing.v1 import AppTest


def open_page(page: str) -> AppTest:
    return fresh(page=page)


def test_compare_trains_both_in_lockstep_on_the_same_data():
    at = open_page("app_pages/compare.py")
    a, b = at.session_state["cmp_a"], at.session_state["cmp_b"]
    assert a.settings.seed == b.settings.seed and a.settings.dataset == b.settings.dataset
    assert any("Balancing loss" in m.value for m in at.markdown), "the difference is highlighted"
    at.button(key="cmp_play").click().run()
    at.run()
    assert a.step == b.step > 0, "views stay aligned step for step"
    at.button(key="cmp_play").click().run()
    at.button(key="cmp_step").click().run()
    assert a.step == b.step
    specs = at.get("plotly_chart")
    assert len(specs) == 4  # two views, A and B side by side


def test_compare_keeps_b_on_a_s_data():
    at = open_page("app_pages/compare.py")
    next(s for s in at.selectbox if s.key == "cmpa_dataset").set_value("moons").run()
    assert not at.exception
    assert at.session_state["cmp_b"].settings.dataset == "moons"
    b_dataset = next(s for s in at.selectbox if s.key == "cmpb_dataset")
    assert b_dataset.disabled


def test_reference_prints_every_router_from_its_docstring():
    at = open_page("app_pages/reference.py")
    text = "\n".join(c.value for c in at.code)
    for phrase in ("Shazeer", "Switch", "Expert Choice", "Hash", "Soft MoE", "DeepSeek-V3", "Jacobs", "C = ceil"):
        assert phrase in text, phrase
    assert len(at.expander) >= 8


def test_reference_shows_the_shared_softmax_steps_with_a_router_s_code():
    at = open_page("app_pages/reference.py")
    at.toggle(key="ref_code_softmax_topk").set_value(True).run()
    assert not at.exception
    text = "\n".join(c.value for c in at.code)
    assert "class SoftmaxTopKRouter" in text and "def softmax_topk(" in text
    assert "stable_topk(probs, k)" in text  # the torch ops a learner can read


def test_reference_prints_the_readable_layer_and_no_kernel():
    """Issue #15: the page prints the algorithm the layer runs (router -> capacity -> gather -> experts -> scatter),
    and nothing of the accelerator: no C file, no ctypes, no kernel."""
    at = open_page("app_pages/reference.py")
    assert not at.exception
    text = "\n".join(c.value for c in at.code) + "\n".join(c.value for c in at.caption)
    for step in ("def route_and_mix(", "assign_slots(", "self.experts(", "index_add(", "def assign_slots(",
                 "def forward(self, x_sorted"):
        assert step in text, step
    for word in (".c`", "ctypes", "kernel", "native", "data_ptr"):
        assert word not in text.replace("accelerator.forward", ""), word
