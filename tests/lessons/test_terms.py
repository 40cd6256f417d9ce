"""Every technical term is introduced where a learner first meets it (issue #14 item 3).

Convention: the first time a term appears in the prose of a lesson step (lessons in order, steps in
order), it is written in **bold** and defined right there: the bold is followed, within
150 characters, by a defining cue, `:`, `(`, `=`, `—`, " is ", " are ", " means ", ", i.e.", ", a ",
", an ", ", the " (e.g. "**nats** (natural-log units of entropy)"). Instead of a definition, the bold
term may be followed by " (glossary)", which points the learner to the Glossary tab of the Reference
page. Either way the glossary has an entry for it.

"First meets it" counts everything a step shows: the try text, the prose, the check and the
prediction. Checks and predictions are shown below the prose, so the definition must be in the
prose of that same step.
"""

from __future__ import annotations

import re

import pytest

from moe_core.lessons.lesson_files import load_glossary, load_lessons

LESSONS = load_lessons()
GLOSSARY = load_glossary()

# glossary term -> regex for the term as the lessons write it (case-insensitive)
TERMS = {
    "Softmax": r"softmax",
    "Logit": r"\blogits?\b",
    "Entropy": r"entropy",
    "Nats": r"\bnats?\b",
    "Top-k": r"\btop-(?:1|2|k|\$k\$)",
    "SwiGLU": r"SwiGLU",
    "Mean squared error (MSE)": r"\bMSE\b|mean squared error",
    "Capacity factor": r"capacity factor",
    "Load-balancing loss": r"balancing loss|load-balancing",
    "LayerNorm": r"LayerNorm|layer norm",
    "Renormalized top-k": r"renormali[sz]",
    "MaxVio": r"MaxVio",
    "Load CV": r"\\mathrm\{CV\}\^2|CV²|squared coefficient of variation",
    "Φ (normal CDF)": r"Φ|\\Phi\b",
    "Residual connection": r"\bresidual\b",
    "bfloat16": r"bfloat16|\bbf16\b",
    "TPU": r"\bTPUs?\b",
    "Expert parallelism": r"expert parallelism|expert-parallel",
    "All-to-all": r"all-to-all",
}


def _shown(step) -> str:
    parts = [step.try_this, step.text]
    if step.check:
        parts += [step.check.question, *step.check.options, *step.check.feedback]
    if step.predict:
        parts += [step.predict.question, *step.predict.options, step.predict.explain]
    return "\n".join(parts)


def _first_step(pattern: str):
    for lesson in LESSONS:
        for number, step in enumerate(lesson.steps, 1):
            if re.search(pattern, _shown(step), re.IGNORECASE):
                return f"{lesson.slug} step {number}", step
    return None, None


@pytest.mark.parametrize("term", TERMS)
def test_term_is_in_the_glossary(term):
    assert term in GLOSSARY, f"{term!r} has no entry in lessons/glossary.toml"


@pytest.mark.parametrize("term", TERMS)
def test_term_is_defined_where_it_first_appears(term):
    pattern = TERMS[term]
    where, step = _first_step(pattern)
    assert step is not None, f"{term!r} appears in no lesson: drop it from TERMS"
    first = re.search(pattern, step.text, re.IGNORECASE)
    assert first, f"{where}: {term!r} first appears in the check or prediction, not in the prose that should define it"
    bold = re.search(rf"\*\*[^*\n]*?(?:{pattern})[^*\n]*?\*\*", step.text, re.IGNORECASE)
    assert bold and bold.start() <= first.start(), \
        f"{where}: the first {term!r} is not in **bold**: {step.text[max(0, first.start() - 60):first.end() + 60]!r}"
    after = step.text[bold.end():bold.end() + 150]
    assert after.startswith(" (glossary)") or re.search(r"[:(=—]| is | are | means |, i\.e\.|, an? |, the ", after), \
        f"{where}: **{term}** is not followed by a definition or ' (glossary)': {after!r}"
