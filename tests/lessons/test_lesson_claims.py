"""Every observation a lesson asks the learner to make holds on the real model (runs each step's preset
headlessly for the step's budget). A claim that fails is rewritten in the lesson, never loosened here."""

from __future__ import annotations

import pytest

from moe_core.lesson_checks import check_observation
from moe_core.lessons import load_lessons

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
