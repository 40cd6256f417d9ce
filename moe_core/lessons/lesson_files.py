"""Lessons as data: one Markdown file per lesson in lessons/, validated here.

A lesson file looks like this (a teacher edits it without touching Python):

    +++
    title = "Load balancing"
    summary = "Without a balancing loss, routing collapses onto a few experts."
    minutes = 12

    [at_scale]                              # optional: the same idea in real models, shown on every step
    text = "Markdown with numbers, each cited: (Fedus et al. 2021, §2.2)."
    caveat = "What does not transfer from the toy."
    sources = ["Fedus, Zoph & Shazeer 2021, Switch Transformers, arXiv:2101.03961"]
    +++

    # Collapse
    ```step
    preset = { dataset = "spirals", n_experts = 8, top_k = 2, aux_loss_coef = 0.0 }
    unlocked = ["aux_loss_coef"]            # controls the learner may touch (settings field names)
    highlight = ["aux_loss_coef"]           # the control to point at
    views = ["load", "curves"]              # views shown (moe_core.views.VIEW_TITLES)
    try = "Press Play, then raise the balancing loss to 0.01."
    code = "moe_core.layer.metrics.load_balancing_loss"   # printed in "show the code"
    budget = 1500                           # steps the observation needs
    compare = { aux_loss_coef = 0.01 }      # optional: an A/B step. A trains the preset, B the preset with these
                                            # changes, side by side on the same data and seed (never a data field,
                                            # never an unlocked control: the compared controls stay fixed)
    compare_labels = ["no balancing loss", "balancing loss 0.01"]  # optional: what the "A: ..." / "B: ..." titles
                                            # say (default: the controls that differ, with their values)

    [check]                                 # optional multiple-choice question
    question = "What does MaxVio measure?"
    options = ["...", "...", "..."]         # distinct; shown in a per-learner shuffled order (option_order)
    answer = 1                              # index into options (as written here, not as shown)
    feedback = ["...", "...", "..."]        # one short explanation per option: why it is right or wrong

    [predict]                               # optional: the learner predicts, then trains, then compares
    question = "Before you press Play: where will MaxVio end after 500 steps?"
    metric = "max_vio"                      # measured on the step's run (moe_core.lessons.checks.metric_value)
    options = ["below 0.5", "from 0.5 to 2", "above 2"]   # ranges in ascending order of the metric
    bounds = [0.5, 2.0]                     # option i holds bounds[i-1] <= value < bounds[i]
    answer = 2                              # where the step's own preset lands (seeds 0, 1, 2; tested)
    explain = "Why the model lands there."  # shown beside the measured value

    [[observe]]                             # a claim the text makes; a test runs it headlessly
    what = "MaxVio without balancing is at least 3x MaxVio with it"
    metric = "max_vio"
    run = { aux_loss_coef = 0.0 }           # changes to the preset for the measured run
    against = { aux_loss_coef = 0.01 }      # the run it is compared with (for ratio/greater/less)
    expect = { ratio_at_least = 3.0 }     # or "greater_than_against" / "less_than_against"
    seeds = [0, 1, 2]                     # at least 3; the claim must hold on each (moe_core.lessons.checks)
                                          # optional numbers take "none": capacity_factor = "none"
    ```
    Markdown prose of the step, with LaTeX: $C = \\lceil cf \\cdot k \\cdot T / E \\rceil$.

Every error names the file, the step and the field.
"""

from __future__ import annotations

import hashlib
import importlib
import re
from pathlib import Path
from typing import Any

import tomllib

from moe_core.lessons.lesson import AtScale, Check, Lesson, LessonError, Observation, Predict, Step
from moe_core.training.settings import CONTROL_BY_FIELD, PlaygroundSettings
from moe_core.views import VIEW_TITLES

LESSONS_DIR = Path(__file__).resolve().parents[2] / "lessons"
METRICS = ("max_vio", "load_cv", "dropped_frac", "router_entropy", "usage_entropy", "task_loss", "aux_loss",
           "test_quality", "mutual_information", "regime_ownership", "active_fraction", "distinct_owners")
EXPECTATIONS = ("at_least", "at_most", "ratio_at_least", "ratio_at_most", "greater_than_against",
                "less_than_against")
STEP_KEYS = {"preset", "unlocked", "highlight", "views", "try", "code", "budget", "check", "predict", "observe",
             "compare", "compare_labels"}
SAME_DATA_FIELDS = ("dataset", "noise", "n_classes", "seed")  # A and B of a comparison always share these
LABEL_CHARS = 40  # a compare label is a column title beside another: keep it short
CHECK_KEYS = {"question", "options", "answer", "feedback"}
PREDICT_KEYS = {"question", "metric", "options", "bounds", "answer", "explain"}
AT_SCALE_KEYS = {"text", "caveat", "sources"}
# a source names where to find it: an arXiv id, a DOI or a web address
_SOURCE_ID = re.compile(r"arXiv:\d{4}\.\d{4,5}|doi:\S+|\b10\.\d{4,}/\S+|https?://\S+")
# a citation in the text: (Author et al. YEAR, §2.2), (..., Table 1), (..., abstract), (..., App. C)
_CITATION = re.compile(r"\([^()]*\b(?:19|20)\d{2}\b[^()]*(?:§|Table|abstract|App\.)")
_STEP_BLOCK = re.compile(r"```step\s*\n(.*?)\n```", re.DOTALL)


def load_lessons(directory: Path = LESSONS_DIR) -> list[Lesson]:
    """Every lesson file (NN-name.md) in order; raises LessonError on the first malformed one."""
    return [load_lesson(p) for p in sorted(directory.glob("[0-9][0-9]-*.md"))]


def load_lesson(path: Path) -> Lesson:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    where = path.name
    match = re.match(r"\+\+\+\s*\n(.*?)\n\+\+\+\s*\n(.*)", text, re.DOTALL)
    if not match:
        raise LessonError(f"{where}: the file must start with a +++ TOML front matter block +++")
    meta = _toml(match.group(1), f"{where}, front matter")
    for key, kind in (("title", str), ("summary", str), ("minutes", int)):
        if not isinstance(meta.get(key), kind):
            raise LessonError(f"{where}, front matter, field '{key}': required, a {kind.__name__}")
    at_scale = _at_scale(meta.get("at_scale"), f"{where}, front matter")
    chunks = re.split(r"^# (.+)$", match.group(2), flags=re.MULTILINE)
    pairs = zip(chunks[1::2], chunks[2::2], strict=True)  # re.split alternates heading, body
    steps = [_step(where, i + 1, title.strip(), body) for i, (title, body) in enumerate(pairs)]
    if not 1 <= len(steps) <= 12:
        raise LessonError(f"{where}: a lesson needs 1 to 12 steps ('# Title' headings), found {len(steps)}")
    return Lesson(slug=path.stem, title=meta["title"], summary=meta["summary"], minutes=meta["minutes"],
                  steps=steps, path=path, at_scale=at_scale)


def _toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise LessonError(f"{where}: not valid TOML ({err})") from None


def _step(where: str, number: int, title: str, body: str) -> Step:
    at = f"{where}, step {number} ('{title}')"
    blocks = _STEP_BLOCK.findall(body)
    if len(blocks) != 1:
        raise LessonError(f"{at}: needs exactly one ```step block, found {len(blocks)}")
    spec = _toml(blocks[0], at)
    prose = _STEP_BLOCK.sub("", body).strip()
    unknown = sorted(set(spec) - STEP_KEYS)
    if unknown:
        raise LessonError(f"{at}, field '{unknown[0]}': unknown; allowed fields are {sorted(STEP_KEYS)}")
    preset = spec.get("preset", {})
    if not isinstance(preset, dict):
        raise LessonError(f"{at}, field 'preset': must be a table of settings")
    preset = _none_values(preset)
    for name in preset:
        if name not in CONTROL_BY_FIELD:
            raise LessonError(f"{at}, field 'preset.{name}': not a control; known: {sorted(CONTROL_BY_FIELD)}")
    try:
        settings = PlaygroundSettings(**preset)
    except (ValueError, TypeError) as err:
        raise LessonError(f"{at}, field 'preset': {err}") from None
    if PlaygroundSettings.coerce(vars(settings))[0] != settings:
        raise LessonError(f"{at}, field 'preset': an impossible combination (see the Playground's notes)")
    lists = {}
    for key, known in (("unlocked", CONTROL_BY_FIELD), ("highlight", CONTROL_BY_FIELD), ("views", VIEW_TITLES)):
        value = spec.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise LessonError(f"{at}, field '{key}': must be a list of names")
        for v in value:
            if v not in known:
                raise LessonError(f"{at}, field '{key}': '{v}' does not exist; known: {sorted(known)}")
        lists[key] = value
    if not lists["views"]:
        raise LessonError(f"{at}, field 'views': name at least one view")
    bad_highlight = sorted(set(lists["highlight"]) - set(lists["unlocked"]))
    if bad_highlight:
        raise LessonError(f"{at}, field 'highlight': {bad_highlight} must also be unlocked")
    for key in ("try", "code"):
        if not isinstance(spec.get(key), str) or not spec[key].strip():
            raise LessonError(f"{at}, field '{key}': required, a non-empty string")
    resolve_code(spec["code"], at)
    budget = spec.get("budget", 0)
    if not isinstance(budget, int) or not 0 <= budget <= 5000:
        raise LessonError(f"{at}, field 'budget': a whole number of training steps from 0 to 5000")
    check = _check(spec.get("check"), at)
    predict = _predict(spec.get("predict"), at)
    if predict is not None and budget == 0:
        raise LessonError(f"{at}, field 'budget': a prediction needs a training budget > 0 (the run that decides it)")
    observe = [_observation(o, f"{at}, observe[{i}]", preset) for i, o in enumerate(spec.get("observe", []))]
    if observe and budget == 0:
        raise LessonError(f"{at}, field 'budget': observations need a training budget > 0")
    compare, labels = _compare(spec, at, preset, lists["unlocked"])
    return Step(title=title, text=prose, preset=preset, unlocked=lists["unlocked"], highlight=lists["highlight"],
                views=lists["views"], try_this=spec["try"], code=spec["code"], budget=budget, check=check,
                observe=observe, predict=predict, compare=compare, compare_labels=labels)


def _compare(spec: dict[str, Any], at: str, preset: dict[str, Any],
             unlocked: list[str]) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """The A/B fields: B's changes to the preset (validated like the preset), and the sides' optional labels."""
    compare = spec.get("compare", {})
    if not isinstance(compare, dict):
        raise LessonError(f"{at}, field 'compare': must be a table of settings (B's changes to the preset)")
    compare = _none_values(compare)
    a = PlaygroundSettings(**preset)
    for name, value in compare.items():
        if name not in CONTROL_BY_FIELD:
            raise LessonError(f"{at}, field 'compare.{name}': not a control; known: {sorted(CONTROL_BY_FIELD)}")
        if name in SAME_DATA_FIELDS:
            raise LessonError(f"{at}, field 'compare.{name}': A and B train on the same data and seed; compare "
                              f"anything but {', '.join(SAME_DATA_FIELDS)}")
        if name in unlocked:
            raise LessonError(f"{at}, field 'compare.{name}': also unlocked; a compared control stays fixed on "
                              "both sides (the unlocked controls change A and B alike), so remove it from 'unlocked'")
        if getattr(a, name) == value:
            raise LessonError(f"{at}, field 'compare.{name}': {value!r} is already the preset's value, so A and B "
                              "would not differ in it")
    if compare:
        try:
            b = PlaygroundSettings(**{**preset, **compare})
        except (ValueError, TypeError) as err:
            raise LessonError(f"{at}, field 'compare': {err}") from None
        if PlaygroundSettings.coerce(vars(b))[0] != b:
            raise LessonError(f"{at}, field 'compare': B is an impossible combination (see the Playground's notes)")
    labels = spec.get("compare_labels")
    if labels is None:
        return compare, None
    if not compare:
        raise LessonError(f"{at}, field 'compare_labels': labels need a 'compare' table (the B side)")
    if not isinstance(labels, list) or len(labels) != 2 \
            or not all(isinstance(v, str) and 0 < len(v.strip()) <= LABEL_CHARS for v in labels):
        raise LessonError(f"{at}, field 'compare_labels': two non-empty strings of at most {LABEL_CHARS} "
                          "characters, A's and B's")
    return compare, (labels[0].strip(), labels[1].strip())


def _none_values(values: dict[str, Any]) -> dict[str, Any]:
    """TOML has no null: "none" stands for None in optional numbers (capacity_factor = "none": dropless)."""
    return {k: None if isinstance(v, str) and v.lower() == "none" and k in CONTROL_BY_FIELD
            and CONTROL_BY_FIELD[k].kind == "optional_float" else v for k, v in values.items()}


def _table(spec: Any, at: str, name: str, known: set[str]) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise LessonError(f"{at}, field '{name}': must be a table")
    unknown = sorted(set(spec) - known)
    if unknown:
        hint = " (replaced by 'feedback', one explanation per option)" if (name, unknown[0]) == ("check", "explain") \
            else ""
        raise LessonError(f"{at}, field '{name}.{unknown[0]}': unknown{hint}; allowed fields are {sorted(known)}")
    for key in ("question", "explain", "text", "caveat"):
        if key in known and (not isinstance(spec.get(key), str) or not spec[key].strip()):
            raise LessonError(f"{at}, field '{name}.{key}': required, a non-empty string")
    return spec


def _options(spec: dict[str, Any], at: str, name: str) -> list[str]:
    options = spec.get("options")
    if not isinstance(options, list) or len(options) < 2 or not all(isinstance(o, str) and o.strip() for o in options):
        raise LessonError(f"{at}, field '{name}.options': a list of at least 2 non-empty strings")
    if len(set(options)) != len(options):
        raise LessonError(f"{at}, field '{name}.options': every option must differ "
                          "(the page finds the chosen one by its text)")
    answer = spec.get("answer")
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(options):
        raise LessonError(f"{at}, field '{name}.answer': an index from 0 to {len(options) - 1}")
    return options


def _check(spec: Any, at: str) -> Check | None:
    if spec is None:
        return None
    spec = _table(spec, at, "check", CHECK_KEYS)
    options = _options(spec, at, "check")
    feedback = spec.get("feedback")
    if not isinstance(feedback, list) or len(feedback) != len(options) \
            or not all(isinstance(f, str) and f.strip() for f in feedback):
        raise LessonError(f"{at}, field 'check.feedback': a list of {len(options)} non-empty strings, one per option "
                          "(why that option is right or wrong)")
    return Check(question=spec["question"], options=options, answer=spec["answer"], feedback=feedback)


def _predict(spec: Any, at: str) -> Predict | None:
    if spec is None:
        return None
    spec = _table(spec, at, "predict", PREDICT_KEYS)
    if spec.get("metric") not in METRICS:
        raise LessonError(f"{at}, field 'predict.metric': one of {', '.join(METRICS)}")
    options = _options(spec, at, "predict")
    bounds = spec.get("bounds")
    if not isinstance(bounds, list) or len(bounds) != len(options) - 1 \
            or not all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds):
        raise LessonError(f"{at}, field 'predict.bounds': a list of {len(options) - 1} numbers, the values "
                          "between one option's range and the next")
    if any(a >= b for a, b in zip(bounds[:-1], bounds[1:], strict=True)):
        raise LessonError(f"{at}, field 'predict.bounds': must increase (the options are ranges in ascending order)")
    return Predict(question=spec["question"], metric=spec["metric"], options=options,
                   bounds=[float(b) for b in bounds], answer=spec["answer"], explain=spec["explain"])


def _at_scale(spec: Any, at: str) -> AtScale | None:
    if spec is None:
        return None
    spec = _table(spec, at, "at_scale", AT_SCALE_KEYS)
    if not re.search(r"\d", re.sub(r"\([^()]*\)", "", spec["text"])):  # a figure, not only a citation's year
        raise LessonError(f"{at}, field 'at_scale.text': give the real models' numbers")
    if not _CITATION.search(spec["text"]):
        raise LessonError(f"{at}, field 'at_scale.text': cite each figure where it stands, with the paper's year and "
                          "its section or table, e.g. (Fedus et al. 2021, §2.2)")
    sources = spec.get("sources")
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
        raise LessonError(f"{at}, field 'at_scale.sources': a non-empty list of strings")
    for source in sources:
        if not _SOURCE_ID.search(source):
            raise LessonError(f"{at}, field 'at_scale.sources': '{source[:60]}' names no arXiv id, DOI or address")
    return AtScale(text=spec["text"], caveat=spec["caveat"], sources=sources)


def option_order(question: str, learner: str, n: int) -> list[int]:
    """The order in which one learner sees a question's n options: a permutation of range(n) that depends only
    on (question, learner), so a reload (a new session of the same browser) shows the same order. A Fisher-Yates
    shuffle driven by SHA-256, the same on every Python version and machine."""
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        digest = hashlib.sha256(f"{learner}\x00{question}\x00{i}".encode()).digest()
        j = int.from_bytes(digest[:8], "big") % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def learner_key(*parts: str | None) -> str:
    """An anonymous, stable key from what a browser sends on every visit (its user agent, its address): a hash,
    never shown, only used to pick option_order."""
    return hashlib.sha256("\x00".join(p or "" for p in parts).encode()).hexdigest()[:16]


def _observation(spec: Any, at: str, preset: dict[str, Any]) -> Observation:
    if not isinstance(spec, dict):
        raise LessonError(f"{at}: must be a table")
    if spec.get("metric") not in METRICS:
        raise LessonError(f"{at}, field 'metric': one of {', '.join(METRICS)}")
    expect = spec.get("expect")
    if expect in ("greater_than_against", "less_than_against"):  # no value needed
        expect = {expect: True}
    if not isinstance(expect, dict) or len(expect) != 1 or next(iter(expect)) not in EXPECTATIONS:
        raise LessonError(f"{at}, field 'expect': one of {', '.join(EXPECTATIONS)} with its value")
    needs_against = next(iter(expect)) not in ("at_least", "at_most")
    changes = {}
    for key in ("run", "against"):
        value = spec.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise LessonError(f"{at}, field '{key}': must be a table of settings")
        value = changes[key] = _none_values(value)
        try:
            PlaygroundSettings(**{**preset, **value})
        except (ValueError, TypeError) as err:
            raise LessonError(f"{at}, field '{key}': {err}") from None
    if needs_against and spec.get("against") is None:
        raise LessonError(f"{at}, field 'against': '{next(iter(expect))}' compares with another run")
    seeds = spec.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise LessonError(f"{at}, field 'seeds': a non-empty list of whole numbers")
    if not isinstance(spec.get("what"), str):
        raise LessonError(f"{at}, field 'what': required, the sentence the lesson claims")
    return Observation(what=spec["what"], metric=spec["metric"], expect=expect, run=changes.get("run", {}),
                       against=changes.get("against"), seeds=seeds)


def resolve_code(dotted: str, at: str = "") -> Any:
    """'moe_core.layer.metrics.z_loss' -> the object, for the 'show the code' expander."""
    parts = dotted.split(".")
    if parts[0] != "moe_core":
        raise LessonError(f"{at}, field 'code': must name something in moe_core, got '{dotted}'")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        return obj
    raise LessonError(f"{at}, field 'code': '{dotted}' does not exist")


def load_glossary(path: Path = LESSONS_DIR / "glossary.toml") -> dict[str, str]:
    """Term -> one-paragraph definition (Markdown), in file order."""
    data = _toml(path.read_text(encoding="utf-8"), path.name)
    terms = data.get("terms", [])
    return {t["term"]: t["definition"] for t in terms}
