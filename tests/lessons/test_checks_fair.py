"""The check questions cannot be gamed: the answer is not the longest option, not always in the same place,
every option explains itself, and the page shows the options in a per-learner order. Every lesson also asks the
learner to predict a measured number before training (the slow test in test_lesson_claims.py runs it)."""

from __future__ import annotations

from collections import Counter

import pytest

from moe_core.lessons.lesson_files import learner_key, load_lessons, option_order

LESSONS = load_lessons()
CHECKS = [(lesson, step) for lesson in LESSONS for step in lesson.steps if step.check is not None]


def test_there_are_check_questions_to_judge():
    assert len(CHECKS) >= 30


def test_the_answer_is_the_longest_option_in_at_most_40_percent_of_questions():
    longest = [f"{lesson.slug}: {step.title}" for lesson, step in CHECKS
               if len(step.check.options[step.check.answer]) >= max(map(len, step.check.options))]
    assert len(longest) <= 0.4 * len(CHECKS), f"{len(longest)} of {len(CHECKS)}: {longest}"


def test_no_answer_position_holds_more_than_half_of_the_questions():
    positions = Counter(step.check.answer for _, step in CHECKS)
    assert max(positions.values()) <= len(CHECKS) / 2, positions


def test_every_option_has_its_own_feedback():
    for lesson, step in CHECKS:
        check = step.check
        where = f"{lesson.slug}: {step.title}"
        assert len(check.feedback) == len(check.options), where
        assert all(f.strip() for f in check.feedback), where
        assert len(set(check.feedback)) == len(check.feedback), f"{where}: a wrong answer repeats another's feedback"
        assert check.explain == check.feedback[check.answer]


def test_distractors_are_comparable_in_length_to_the_answer():
    for lesson, step in CHECKS:
        answer = len(step.check.options[step.check.answer])
        for i, option in enumerate(step.check.options):
            if i != step.check.answer:
                assert len(option) >= 0.5 * answer, f"{lesson.slug}: {step.title}: '{option}' is a throwaway"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.slug)
def test_every_lesson_has_a_predict_then_run_question(lesson):
    predicts = [step.predict for step in lesson.steps if step.predict is not None]
    assert predicts, f"{lesson.slug} asks for no prediction"
    for predict in predicts:
        assert "Play" in predict.question, "the question says to predict before pressing Play"


# -- the order a learner sees ---------------------------------------------------------------------------------
def test_option_order_is_a_stable_permutation():
    for _, step in CHECKS:
        n = len(step.check.options)
        order = option_order(step.check.question, "learner-a", n)
        assert sorted(order) == list(range(n))
        assert order == option_order(step.check.question, "learner-a", n), "the same learner, the same order"
    assert option_order("q", "a", 1) == [0] and option_order("q", "a", 0) == []


def test_option_order_does_not_depend_on_the_process():
    # SHA-256, not hash(): a reload, another server process or another Python gives the same order
    assert option_order("What does MaxVio measure?", "k", 3) == [2, 1, 0]
    assert option_order("What does MaxVio measure?", "k", 5) == [2, 3, 0, 1, 4]


def test_different_learners_see_different_orders():
    a = learner_key("Mozilla/5.0 (X11; Linux x86_64)", "10.0.0.1")
    b = learner_key("Mozilla/5.0 (Macintosh)", "10.0.0.2")
    assert a != b and "Mozilla" not in a and len(a) == 16
    differ = sum(option_order(step.check.question, a, 3) != option_order(step.check.question, b, 3)
                 for _, step in CHECKS)
    assert differ >= len(CHECKS) / 2, f"only {differ} of {len(CHECKS)} questions are ordered differently"


def test_the_right_answer_lands_in_every_position_for_some_learners():
    learners = [learner_key(f"browser {i}", "127.0.0.1") for i in range(300)]
    for _, step in CHECKS[:5]:
        shown_at = Counter(option_order(step.check.question, key, 3).index(step.check.answer) for key in learners)
        assert all(60 <= shown_at[p] <= 140 for p in range(3)), shown_at
