"""Every observation a lesson asks the learner to make holds on the real model (runs each step's preset
headlessly for the step's budget). A claim that fails is rewritten in the lesson, never loosened here."""

from __future__ import annotations

import pytest

from moe_core.lesson_checks import check_observation, metric_value, train_variant
from moe_core.lessons import load_lessons
from moe_core.settings import PlaygroundSettings

RUNS: dict = {}  # trained runs shared by observations of the same preset, seed and budget (this module only)
CASES = [(lesson, step, obs) for lesson in load_lessons() for step in lesson.steps for obs in step.observe]


@pytest.mark.slow
@pytest.mark.parametrize("lesson, step, obs", CASES,
                         ids=[f"{lesson.slug}:{step.title[:30]}:{obs.metric}" for lesson, step, obs in CASES])
def test_lesson_observation_holds(lesson, step, obs):
    result = check_observation(step, obs, RUNS)
    assert result.passed, result.summary


def test_every_lesson_makes_checked_claims():
    lessons = load_lessons()
    assert len(CASES) >= 8
    for lesson in lessons:
        assert any(step.observe for step in lesson.steps), f"{lesson.slug} makes no checked observation"


PREDICTS = [(lesson, step) for lesson in load_lessons() for step in lesson.steps if step.predict is not None]


@pytest.mark.slow
@pytest.mark.parametrize("lesson, step", PREDICTS,
                         ids=[f"{lesson.slug}:{step.title[:30]}" for lesson, step in PREDICTS])
def test_a_prediction_question_has_the_answer_the_model_shows(lesson, step):
    """The run of the step's own preset lands in the option the file calls right, on seeds 0, 1 and 2: the page
    measures the learner's run the same way (moe_core.lesson_checks.metric_value after the step's budget)."""
    predict = step.predict
    for seed in (0, 1, 2):
        key = (PlaygroundSettings(**{**step.preset, "seed": seed}), step.budget)
        if key not in RUNS:
            RUNS[key] = train_variant(step.preset, {}, seed, step.budget)
        value = metric_value(RUNS[key], predict.metric)
        assert predict.option_for(value) == predict.answer, (
            f"seed {seed}: {predict.metric} = {value:.4g} lands in '{predict.options[predict.option_for(value)]}', "
            f"the file says '{predict.options[predict.answer]}'")
