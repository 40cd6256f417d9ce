"""AppTest: every step of every lesson renders; Previous/Next and deep links land on the right step."""

from __future__ import annotations

import pytest
from apptools import fresh, warnings_text
from streamlit.testing.v1 import AppTest

from moe_core.lessons.lesson_files import learner_key, load_lessons, option_order

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
    at_scale = next(e for e in at.expander if e.label == "At scale: the same idea in real models")
    assert lesson.at_scale.text in [m.value for m in at_scale.markdown], "the lesson's At scale box, on every step"
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
    """Each option explains itself (success for the right one, a warning for a wrong one); the options are shown
    in this learner's order (moe_core.lessons.lesson_files.option_order), and the answer is found by identity, not
    position."""
    lesson, number, step = next((les, i + 1, s) for les in LESSONS for i, s in enumerate(les.steps) if s.check)
    check = step.check
    at = open_lessons({"lesson": lesson.slug, "step": str(number)})
    radio = next(r for r in at.radio if r.key and r.key.startswith("check_"))
    learner = learner_key(None, None, None)  # AppTest sends no headers and no address
    assert list(radio.options) == [check.options[i] for i in option_order(check.question, learner, len(check.options))]
    radio.set_value(check.options[check.answer]).run()
    assert any(check.explain in s.value for s in at.success)
    for i, option in enumerate(check.options):
        radio.set_value(option).run()
        if i == check.answer:
            assert [s.value for s in at.success if s.value.startswith("Right.")] == [f"Right. {check.feedback[i]}"]
            assert not any("Not quite" in w.value for w in at.warning)
        else:
            assert any(w.value == f"Not quite. {check.feedback[i]}" for w in at.warning), option
            assert not any(s.value.startswith("Right.") for s in at.success)


PREDICT_STEP = min(((les, i + 1, s) for les in LESSONS for i, s in enumerate(les.steps) if s.predict),
                   key=lambda t: t[2].budget)


def _predict_radio(at: AppTest):
    return next(r for r in at.radio if r.key and r.key.startswith("predict_"))


def _captions(at: AppTest) -> str:
    return " ".join(c.value for c in at.caption)


def test_predict_then_run_locks_the_prediction_and_sets_the_measured_value_beside_it():
    lesson, number, step = PREDICT_STEP
    predict = step.predict
    at = open_lessons({"lesson": lesson.slug, "step": str(number)})
    sess = at.session_state["lesson_sess"]
    radio = _predict_radio(at)
    assert list(radio.options) == predict.options and radio.value is None and not radio.disabled
    assert "Choose before you press Play" in _captions(at)
    outcome = next(e for e in at.expander if e.label.startswith("What you will see"))  # it would give it away
    assert "What you will see" in step.text and not any("## What you will see" in m.value for m in at.markdown)
    assert outcome.markdown
    assert not any(r.key and r.key.startswith("check_") for r in at.radio), "the check waits: it could give it away"
    radio.set_value(predict.options[predict.answer]).run()
    at.button(key="les_step").click().run()  # training has started: the prediction is locked
    assert sess.step == 1 and _predict_radio(at).disabled
    assert any(r.key and r.key.startswith("check_") for r in at.radio) == (step.check is not None)
    assert _predict_radio(at).value == predict.options[predict.answer]
    assert "made before training and is locked" in _captions(at)
    assert f"appears here at step {step.budget:,}" in _captions(at)
    assert not any("Measured" in m.value for m in at.markdown)
    sess.tick(budget_s=300, steps=step.budget - sess.step)  # train to the step's budget, headless
    assert sess.step == step.budget
    at.run()
    measured = next(m.value for m in at.markdown if m.value.startswith("**Measured**"))
    assert f"at step {step.budget:,}" in measured and predict.options[predict.answer] in measured
    assert any(s.value == f"Your prediction holds. {predict.explain}" for s in at.success)
    assert any(m.value.startswith("## What you will see") for m in at.markdown), "settled: the outcome is shown"
    assert not any(e.label.startswith("What you will see") for e in at.expander)

    at.button(key="les_reset").click().run()  # Reset: a fresh run, and the prediction may change again
    assert not _predict_radio(at).disabled and not any("Measured" in m.value for m in at.markdown)
    wrong = next(o for i, o in enumerate(predict.options) if i != predict.answer)
    _predict_radio(at).set_value(wrong).run()
    at.button(key="les_step").click().run()
    sess.tick(budget_s=300, steps=step.budget - sess.step)
    at.run()
    assert any(w.value == f"The model says otherwise. {predict.explain}" for w in at.warning)


def test_training_before_a_prediction_asks_for_a_reset():
    lesson, number, _ = PREDICT_STEP
    at = open_lessons({"lesson": lesson.slug, "step": str(number)})
    at.button(key="les_step").click().run()
    assert _predict_radio(at).disabled and _predict_radio(at).value is None
    assert "Training started before a prediction. Press Reset to predict first." in _captions(at)
