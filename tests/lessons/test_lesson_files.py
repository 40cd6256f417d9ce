"""Every lesson file loads and validates; malformed files are refused with file, step and field named."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from moe_core.lessons.lesson import LessonError
from moe_core.lessons.lesson_files import load_glossary, load_lesson, load_lessons
from moe_core.training.settings import PlaygroundSettings

LESSONS = load_lessons()


def test_nine_lessons_of_four_to_eight_steps():
    assert len(LESSONS) == 9
    for lesson in LESSONS:
        assert 4 <= len(lesson.steps) <= 8, lesson.slug
        assert lesson.summary and 1 <= lesson.minutes <= 60


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.slug)
def test_presets_controls_views_and_code_exist(lesson):
    for step in lesson.steps:
        settings = step.settings
        assert PlaygroundSettings.coerce(vars(settings))[0] == settings
        assert step.views and step.try_this and step.text
        assert set(step.highlight) <= set(step.unlocked)
        if step.check is not None:
            assert 0 <= step.check.answer < len(step.check.options)
            assert len(step.check.feedback) == len(step.check.options)
        if step.predict is not None:
            assert step.budget > 0 and len(step.predict.bounds) == len(step.predict.options) - 1


def test_the_glossary_loads():
    terms = load_glossary()
    assert len(terms) >= 20
    assert all(isinstance(v, str) and v.strip() for v in terms.values())


GOOD_STEP = '''
# A step
```step
preset = { dataset = "spirals" }
views = ["load"]
code = "moe_core.layer.metrics.max_violation"
try = "Press Play."
```
Some prose.
'''


def _write(tmp_path: Path, body: str, front: str = 'title = "T"\nsummary = "S"\nminutes = 5') -> Path:
    path = tmp_path / "01-test.md"
    path.write_text(f"+++\n{front}\n+++\n" + textwrap.dedent(body))
    return path


def test_a_good_minimal_lesson_loads(tmp_path):
    lesson = load_lesson(_write(tmp_path, GOOD_STEP))
    assert lesson.slug == "01-test" and lesson.steps[0].title == "A step"


@pytest.mark.parametrize("mutation, expected", [
    (('dataset = "spirals"', 'dataset = "nope"'), "01-test.md, step 1 ('A step'), field 'preset'"),
    (('dataset = "spirals"', 'experts = 4'), "field 'preset.experts': not a control"),
    (('dataset = "spirals"', 'n_experts = 4, top_k = 6'), "field 'preset'"),
    (('views = ["load"]', 'views = ["loads"]'), "field 'views': 'loads' does not exist"),
    (('views = ["load"]', 'views = []'), "field 'views': name at least one view"),
    (('code = "moe_core.layer.metrics.max_violation"', 'code = "moe_core.layer.metrics.nothing"'), "field 'code'"),
    (('code = "moe_core.layer.metrics.max_violation"', 'code = "os.system"'), "must name something in moe_core"),
    (('try = "Press Play."', 'unlocked = ["wings"]\ntry = "x"'), "field 'unlocked': 'wings' does not exist"),
    (('try = "Press Play."', 'highlight = ["top_k"]\ntry = "x"'), "field 'highlight'"),
    (('try = "Press Play."', 'colour = "red"\ntry = "x"'), "field 'colour': unknown"),
    (('try = "Press Play."', 'budget = 100\ntry = "x"\n[check]\nquestion = "q"\noptions = ["a"]\nanswer = 0\n'
      'feedback = ["e"]'), "field 'check.options'"),
    (('try = "Press Play."', 'try = "x"\n[check]\nquestion = "q"\noptions = ["a", "b"]\nanswer = 0\n'
      'feedback = ["right"]'), "field 'check.feedback': a list of 2 non-empty strings"),
    (('try = "Press Play."', 'try = "x"\n[check]\nquestion = "q"\noptions = ["a", "b"]\nanswer = 0\n'
      'explain = "e"'), "field 'check.explain': unknown (replaced by 'feedback'"),
    (('try = "Press Play."', 'try = "x"\n[check]\nquestion = "q"\noptions = ["a", "a"]\nanswer = 0\n'
      'feedback = ["e", "f"]'), "field 'check.options': every option must differ"),
    (('try = "Press Play."', 'try = "x"\nbudget = 10\n[predict]\nquestion = "q"\nmetric = "speed"\n'
      'options = ["a", "b"]\nbounds = [1]\nanswer = 0\nexplain = "e"'), "field 'predict.metric'"),
    (('try = "Press Play."', 'try = "x"\nbudget = 10\n[predict]\nquestion = "q"\nmetric = "max_vio"\n'
      'options = ["a", "b", "c"]\nbounds = [1]\nanswer = 0\nexplain = "e"'),
     "field 'predict.bounds': a list of 2 numbers"),
    (('try = "Press Play."', 'try = "x"\nbudget = 10\n[predict]\nquestion = "q"\nmetric = "max_vio"\n'
      'options = ["a", "b", "c"]\nbounds = [2, 1]\nanswer = 0\nexplain = "e"'),
     "field 'predict.bounds': must increase"),
    (('try = "Press Play."', 'try = "x"\nbudget = 10\n[predict]\nquestion = "q"\nmetric = "max_vio"\n'
      'options = ["a", "b"]\nbounds = [1]\nanswer = 2\nexplain = "e"'), "field 'predict.answer'"),
    (('try = "Press Play."', 'try = "x"\nbudget = 10\n[predict]\nquestion = "q"\nmetric = "max_vio"\n'
      'options = ["a", "b"]\nbounds = [1]\nanswer = 0'), "field 'predict.explain': required"),
    (('try = "Press Play."', 'try = "x"\n[predict]\nquestion = "q"\nmetric = "max_vio"\n'
      'options = ["a", "b"]\nbounds = [1]\nanswer = 0\nexplain = "e"'), "a prediction needs a training budget"),
    (('try = "Press Play."', 'try = "x"\nbudget = 10\n[[observe]]\nwhat = "w"\nmetric = "speed"\n'
      'expect = { at_least = 1 }'), "observe[0], field 'metric'"),
    (('try = "Press Play."', 'try = "x"\nbudget = 10\n[[observe]]\nwhat = "w"\nmetric = "max_vio"\n'
      'expect = { ratio_at_least = 3 }'), "field 'against'"),
    (('try = "Press Play."', 'try = "x"\n[[observe]]\nwhat = "w"\nmetric = "max_vio"\nexpect = { at_most = 1 }'),
     "field 'budget'"),
    (('preset = {', 'preset = {{'), "not valid TOML"),
])
def test_malformed_lessons_name_file_step_and_field(tmp_path, mutation, expected):
    old, new = mutation
    with pytest.raises(LessonError) as err:
        load_lesson(_write(tmp_path, GOOD_STEP.replace(old, new)))
    assert expected in str(err.value)
    assert "01-test.md" in str(err.value)


def test_missing_front_matter_and_missing_step_block(tmp_path):
    path = tmp_path / "02-x.md"
    path.write_text("# Step\nno spec\n")
    with pytest.raises(LessonError, match="front matter"):
        load_lesson(path)
    with pytest.raises(LessonError, match=r"step 1 \('A step'\): needs exactly one ```step block"):
        load_lesson(_write(tmp_path, "# A step\nprose only\n"))
    with pytest.raises(LessonError, match="field 'minutes'"):
        load_lesson(_write(tmp_path, GOOD_STEP, front='title = "T"\nsummary = "S"'))


def test_none_for_optional_numbers_and_value_free_expectations(tmp_path):
    body = GOOD_STEP.replace('preset = { dataset = "spirals" }',
                             'preset = { dataset = "spirals", capacity_factor = "none" }')
    body = body.replace('try = "Press Play."',
                        'try = "x"\nbudget = 10\n[[observe]]\nwhat = "w"\nmetric = "dropped_frac"\n'
                        'run = { capacity_factor = 0.5 }\nagainst = { capacity_factor = "none" }\n'
                        'expect = "greater_than_against"')
    step = load_lesson(_write(tmp_path, body)).steps[0]
    assert step.settings.capacity_factor is None
    assert step.observe[0].against == {"capacity_factor": None}
    assert step.observe[0].expect == {"greater_than_against": True}


def test_a_prediction_maps_a_measured_value_to_its_range(tmp_path):
    body = GOOD_STEP.replace('try = "Press Play."',
                             'try = "x"\nbudget = 10\n[predict]\nquestion = "q"\nmetric = "max_vio"\n'
                             'options = ["low", "mid", "high"]\nbounds = [0.5, 2]\nanswer = 2\nexplain = "e"')
    predict = load_lesson(_write(tmp_path, body)).steps[0].predict
    assert predict.bounds == [0.5, 2.0]
    assert [predict.option_for(v) for v in (0.0, 0.49, 0.5, 1.9, 2.0, 3.0)] == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.slug)
def test_every_lesson_has_an_at_scale_box_with_numbers_and_sources(lesson):
    box = lesson.at_scale
    assert box is not None, f"{lesson.slug}: no [at_scale] in the front matter"
    assert re.search(r"\d", re.sub(r"\([^()]*\)", "", box.text)), "at least one real model's number"
    assert re.search(r"\(\D[^()]*\b(19|20)\d\d\b[^()]*(§|Table|abstract|App\.)", box.text), \
        "each figure is cited where it stands: (paper year, section or table)"
    assert box.sources and all(re.search(r"arXiv:\d{4}\.\d{4,5}|doi:", s) for s in box.sources)
    assert box.caveat.strip(), "what does not transfer from the toy"
    for source in box.sources:  # every listed source is cited in the text, by its first author's name
        author = re.match(r"[A-Z][\w-]+", source).group(0)
        assert author in box.text, f"{lesson.slug}: {source} is listed but not cited in the text"


AT_SCALE = ('title = "T"\nsummary = "S"\nminutes = 5\n[at_scale]\ntext = "{text}"\ncaveat = "{caveat}"\n'
            'sources = [{sources}]')


@pytest.mark.parametrize("fields, expected", [
    ({"text": "No figures (Fedus et al. 2021, abstract)."}, "field 'at_scale.text': give the real models' numbers"),
    ({"text": "A 7x speed-up."}, "field 'at_scale.text': cite each figure"),
    ({"caveat": ""}, "field 'at_scale.caveat': required"),
    ({"sources": ""}, "field 'at_scale.sources': a non-empty list"),
    ({"sources": '"Fedus et al. 2021, Switch Transformers"'}, "names no arXiv id, DOI or address"),
])
def test_a_malformed_at_scale_box_is_refused(tmp_path, fields, expected):
    values = {"text": "A 7x speed-up (Fedus et al. 2021, abstract).", "caveat": "Toy sizes.",
              "sources": '"Fedus et al. 2021, arXiv:2101.03961"', **fields}
    with pytest.raises(LessonError) as err:
        load_lesson(_write(tmp_path, GOOD_STEP, front=AT_SCALE.format(**values)))
    assert expected in str(err.value) and "01-test.md, front matter" in str(err.value)
    good = {"text": "A 7x speed-up (Fedus et al. 2021, abstract).", "caveat": "Toy sizes.",
            "sources": '"Fedus et al. 2021, arXiv:2101.03961"'}
    assert load_lesson(_write(tmp_path, GOOD_STEP, front=AT_SCALE.format(**good))).at_scale.caveat == "Toy sizes."
