"""What a lesson is: steps with a preset, what to try, a question, a prediction and the claims a test runs.

The file format that fills these lives in moe_core.lessons.lesson_files, with its validation.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moe_core.training.settings import PlaygroundSettings


class LessonError(ValueError):
    """A malformed lesson file: the message names file, step and field."""


@dataclass(frozen=True)
class Check:
    question: str
    options: list[str]  # as written in the file; the page shows them in option_order
    answer: int  # index into options
    feedback: list[str]  # one per option: why that option is right or wrong

    @property
    def explain(self) -> str:
        """The explanation of the right answer."""
        return self.feedback[self.answer]


@dataclass(frozen=True)
class Predict:
    """Predict, then run: the learner picks a range for a metric before training; the run decides."""
    question: str
    metric: str  # one of lesson_files.METRICS, measured by moe_core.lessons.checks.metric_value
    options: list[str]  # ranges of the metric, in ascending order
    bounds: list[float]  # ascending; option i holds bounds[i-1] <= value < bounds[i]
    answer: int  # the option the step's own preset lands in (seeds 0, 1, 2; tests/lessons checks it)
    explain: str

    def option_for(self, value: float) -> int:
        """The option a measured value falls in."""
        return bisect.bisect_right(self.bounds, value)


@dataclass(frozen=True)
class AtScale:
    """The lesson's idea in real models: numbers with their sources, and what the toy does not show."""
    text: str  # Markdown, every figure cited in place (paper, section or table)
    caveat: str  # what does not transfer from the toy
    sources: list[str]  # each with an arXiv id, a DOI or a web address


@dataclass(frozen=True)
class Observation:
    what: str
    metric: str
    expect: dict[str, Any]
    run: dict[str, Any] = field(default_factory=dict)
    against: dict[str, Any] | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # each must hold (moe_core.lessons.checks)


@dataclass(frozen=True)
class Step:
    title: str
    text: str  # Markdown (with $LaTeX$)
    preset: dict[str, Any]  # PlaygroundSettings fields
    unlocked: list[str]
    highlight: list[str]
    views: list[str]
    try_this: str
    code: str  # dotted path of the moe_core function or class this step runs
    budget: int  # training steps the step's observations need
    check: Check | None
    observe: list[Observation]
    predict: Predict | None = None
    compare: dict[str, Any] = field(default_factory=dict)  # an A/B step: B's changes to the preset ({}: none)
    compare_labels: tuple[str, str] | None = None  # short titles of A and B (None: name the differing controls)

    @property
    def settings(self) -> PlaygroundSettings:
        """A's settings: the preset (the predict box and the check are about this run)."""
        return PlaygroundSettings(**self.preset)

    @property
    def settings_b(self) -> PlaygroundSettings | None:
        """B's settings on an A/B step (the preset with `compare`), else None."""
        return PlaygroundSettings(**{**self.preset, **self.compare}) if self.compare else None


@dataclass(frozen=True)
class Lesson:
    slug: str  # file name without extension: the ?lesson= value
    title: str
    summary: str
    minutes: int
    steps: list[Step]
    path: Path
    at_scale: AtScale | None = None
