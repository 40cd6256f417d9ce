"""What the lessons tell a learner to click exists under that name on the page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from moe_core.figures import METRIC_LABELS
from moe_core.lessons.lesson_files import load_lessons
from moe_core.training.settings import CONTROLS

ROOT = Path(__file__).resolve().parents[2]
LESSONS = load_lessons()
CURVE_NAMES = {label.lower() for label in METRIC_LABELS.values()}
WIDGET_NAMES = {c.label.lower() for c in CONTROLS} | {"limit expert capacity", "arms", "classes", "new data"}


def _texts(lesson) -> list[tuple[str, str]]:
    return [(f"{lesson.slug} step {i}", f"{step.try_this}\n{step.text}") for i, step in enumerate(lesson.steps, 1)]


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda les: les.slug)
def test_curves_a_lesson_asks_for_are_in_the_curves_box(lesson):
    for where, text in _texts(lesson):
        for asked in re.findall(r"[Aa]dd ((?:'[^']+'(?:,? and |, )?)+) to the curves", text):
            for name in re.findall(r"'([^']+)'", asked):
                assert any(option.startswith(name.lower()) for option in CURVE_NAMES), \
                    f"{where}: 'Add {name!r} to the curves', but the Curves box offers {sorted(CURVE_NAMES)}"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda les: les.slug)
def test_no_step_asks_for_a_capacity_of_none(lesson):
    # the capacity is switched off with the 'Limit expert capacity' toggle; no slider or box takes "none"
    for where, text in _texts(lesson):
        assert not re.search(r"capacity factor (set )?to none|capacity \(none\)", text), where


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda les: les.slug)
def test_quoted_controls_exist(lesson):
    for where, text in _texts(lesson):
        for name in re.findall(r"'([A-Z][^']{2,40})'", text):
            if name.lower() in CURVE_NAMES or not any(w in name.lower() for w in ("capacity", "renormalize",
                                                                                 "router noise", "balancing")):
                continue
            assert name.lower() in WIDGET_NAMES, f"{where}: '{name}' is not a control's label"


def test_nothing_cites_a_folder_outside_the_repository():
    cited = [str(p.relative_to(ROOT)) for folder in ("app", "moe_core", "lessons", "docs", ".streamlit", "benchmarks")
             for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".md", ".toml", ".c")
             and "../shared" in p.read_text(errors="replace")]
    assert not cited and "../shared" not in (ROOT / "README.md").read_text(), cited
