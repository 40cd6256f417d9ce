"""AppTest: every step of every lesson renders; Previous/Next and deep links land on the right step."""

from __future__ import annotations

import pytest
from apptools import fresh, warnings_text
from streamlit.testing.v1 import AppTest

from moe_core.lessons import load_lessons

PAGE = "app_pages/lessons.py"
LESSONS = load_lessons()


def open_lessons(query: dict[str, str] | None = None) -> AppTest:
    return fresh(query, page=PAGE)


def progress_text(at: AppTest) -> str:
    return at.get("progress")[0].proto.text


def test_index_lists_every_lesson_with_time():
    at = open_lessons()
    text = " ".join(m.value for m in at.markdown)
    for lesson in LESSONS:
        assert lesson.title in text and lesson.summary in text
    assert "min" in text


@pytest.mark.parametrize("lesson, number", [(lesson, n) for lesson in LESSONS for n in range(1, len(lesson.steps) + 1)],
                         ids=lambda v: v.slug if hasattr(v, "slug") else str(v))
def test_every_step_renders_from_a_deep_link(lesson, number):
    at = open_lessons({"lesson": lesson.slug, "step": str(number)})
    step = lesson.steps[number - 1]
    assert progress_text(at) == f"Step {number} of {len(lesson.steps)}: {step.title}"
    sess = at.session_state["lesson_sess"]
    assert sess.settings == step.settings, "the step's preset is loaded"
    assert any(step.try_this in i.value for i in at.info)
    code = [c.value for c in at.code]
    assert any("def " in c or "class " in c for c in code), "show the code prints the step's function"
    at.button(key="les_step").click().run()
    assert not at.exception and sess.step == 1, "the step's model trains"
    assert len(at.get("plotly_chart")) >= 1


def test_next_and_previous_walk_the_steps():
    lesson = LESSONS[0]
    at = open_lessons({"lesson": lesson.slug, "step": "1"})
    at.button(key="les_next").click().run()
    at.run()
    assert at.query_params["step"] == ["2"] or at.query_params["step"] == "2"
    assert progress_text(at).startswith(f"Step 2 of {len(lesson.steps)}")
    at.button(key="les_prev").click().run()
    at.run()
    assert progress_text(at).startswith("Step 1 of")
    assert at.button(key="les_prev").disabled


def test_unknown_lesson_and_step_fall_back_with_a_message():
    at = open_lessons({"lesson": "99-nothing"})
    assert "There is no lesson '99-nothing'" in warnings_text(at)
    at = open_lessons({"lesson": LESSONS[0].slug, "step": "42"})
    assert "does not exist" in warnings_text(at)
    assert progress_text(at).startswith("Step 1 of")
    at = open_lessons({"lesson": LESSONS[0].slug, "step": "abc"})
    assert progress_text(at).startswith("Step 1 of")


def test_check_question_gives_feedback():
    lesson, number, step = next((les, i + 1, s) for les in LESSONS for i, s in enumerate(les.steps) if s.check)
    at = open_lessons({"lesson": lesson.slug, "step": str(number)})
    radio = next(r for r in at.radio if r.key and r.key.startswith("check_"))
    radio.set_value(step.check.options[step.check.answer]).run()
    assert any(step.check.explain in s.value for s in at.success)
    wrong = next(o for i, o in enumerate(step.check.options) if i != step.check.answer)
    radio.set_value(wrong).run()
    assert any("Not quite" in w.value for w in at.warning)
