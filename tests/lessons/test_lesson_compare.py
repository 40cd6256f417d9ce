"""The A/B step format: `compare` (B's changes to the preset) and `compare_labels`, validated like the preset,
with every error naming the file, the step and the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from moe_core.lessons.lesson import LessonError
from moe_core.lessons.lesson_files import SAME_DATA_FIELDS, load_lesson, load_lessons
from moe_core.training.settings import PlaygroundSettings

STEP = '''
# An A/B step
```step
preset = { dataset = "spirals", n_experts = 8, top_k = 2, aux_loss_coef = 0.0 }
unlocked = ["router_noise"]
views = ["load"]
code = "moe_core.layer.metrics.max_violation"
try = "Press Play: A without a balancing loss, B with 0.01."
compare = { aux_loss_coef = 0.01 }
```
Some prose.
'''


def _load(tmp_path: Path, body: str):
    path = tmp_path / "01-test.md"
    path.write_text('+++\ntitle = "T"\nsummary = "S"\nminutes = 5\n+++\n' + textwrap.dedent(body))
    return load_lesson(path)


def test_an_a_b_step_loads_with_b_as_the_preset_plus_its_changes(tmp_path):
    step = _load(tmp_path, STEP).steps[0]
    assert step.compare == {"aux_loss_coef": 0.01} and step.compare_labels is None
    assert step.settings == PlaygroundSettings(dataset="spirals", n_experts=8, top_k=2, aux_loss_coef=0.0)
    assert step.settings_b == PlaygroundSettings(dataset="spirals", n_experts=8, top_k=2, aux_loss_coef=0.01)
    labelled = _load(tmp_path, STEP.replace("compare = {", 'compare_labels = ["off", "on"]\ncompare = {')).steps[0]
    assert labelled.compare_labels == ("off", "on")
    plain = _load(tmp_path, STEP.replace("compare = { aux_loss_coef = 0.01 }\n", "")).steps[0]
    assert plain.compare == {} and plain.settings_b is None


def test_none_stands_for_no_capacity_in_compare(tmp_path):
    step = _load(tmp_path, STEP.replace("compare = { aux_loss_coef = 0.01 }",
                                        'compare = { capacity_factor = 0.5 }')).steps[0]
    assert step.settings_b.capacity_factor == 0.5 and step.settings.capacity_factor is None
    with_cap = STEP.replace("aux_loss_coef = 0.0 }", "aux_loss_coef = 0.0, capacity_factor = 1.0 }")
    step = _load(tmp_path, with_cap.replace("compare = { aux_loss_coef = 0.01 }",
                                            'compare = { capacity_factor = "none" }')).steps[0]
    assert step.settings_b.capacity_factor is None


@pytest.mark.parametrize("compare, expected", [
    ("compare = { wings = 2 }", "field 'compare.wings': not a control"),
    ("compare = { seed = 3 }", "field 'compare.seed': A and B train on the same data and seed"),
    ('compare = { dataset = "moons" }', "field 'compare.dataset': A and B train on the same data"),
    ("compare = { router_noise = 0.2 }", "field 'compare.router_noise': also unlocked"),
    ("compare = { aux_loss_coef = 0.0 }", "field 'compare.aux_loss_coef': 0.0 is already the preset's value"),
    ("compare = { top_k = 9 }", "field 'compare'"),
    ('compare = { router = "switch" }', "field 'compare': B is an impossible combination"),
    ('compare = "aux_loss_coef"', "field 'compare': must be a table"),
    ('compare = { aux_loss_coef = 0.01 }\ncompare_labels = ["only one"]', "field 'compare_labels': two"),
    ('compare = { aux_loss_coef = 0.01 }\ncompare_labels = ["a", ""]', "field 'compare_labels': two"),
    ('compare = { aux_loss_coef = 0.01 }\ncompare_labels = ["a", "' + "x" * 41 + '"]', "at most 40 characters"),
    ('compare_labels = ["a", "b"]', "field 'compare_labels': labels need a 'compare' table"),
])
def test_a_malformed_comparison_names_file_step_and_field(tmp_path, compare, expected):
    with pytest.raises(LessonError) as err:
        _load(tmp_path, STEP.replace("compare = { aux_loss_coef = 0.01 }", compare))
    assert expected in str(err.value) and "01-test.md, step 1 ('An A/B step')" in str(err.value)


@pytest.mark.parametrize("lesson", load_lessons(), ids=lambda les: les.slug)
def test_every_a_b_step_says_what_a_and_b_train(lesson):
    """The try text of an A/B step tells the learner that Play trains both: no 'press Reset and train again'."""
    for number, step in enumerate(lesson.steps, 1):
        if not step.compare:
            continue
        where = f"{lesson.slug} step {number}"
        assert " A " in f" {step.try_this} " and " B " in f" {step.try_this} ", where
        assert "Reset" not in step.try_this and "train again" not in step.try_this, where
        assert not set(step.compare) & set(SAME_DATA_FIELDS), where
