"""Lessons: step-through explanations tied to a live model. ?lesson=<slug>&step=<n> links to any step."""

import inspect
import re

import streamlit as st
from moe_ui import controls, live, pair, state

from moe_core.lessons.checks import BATCH_METRICS, TAIL_STEPS, metric_value
from moe_core.lessons.lesson import LessonError, Predict
from moe_core.lessons.lesson_files import learner_key, load_lessons, option_order, resolve_code
from moe_core.training.session import PlaygroundSession

# How the page names a predicted metric, and how it prints its value
METRIC_NAMES = {"max_vio": ("MaxVio", "{:.2f}"), "load_cv": ("load CV", "{:.2f}"),
                "dropped_frac": ("dropped share", "{:.1%}"), "router_entropy": ("router entropy", "{:.2f} nats"),
                "usage_entropy": ("usage entropy", "{:.2f} nats"), "task_loss": ("task loss", "{:.3f}"),
                "aux_loss": ("aux loss", "{:.4f}"), "test_quality": ("test accuracy", "{:.1%}"),
                "mutual_information": ("expert-domain mutual information", "{:.2f} nats"),
                "regime_ownership": ("regime ownership", "{:.0%}"), "active_fraction": ("active share", "{:.1%}"),
                "distinct_owners": ("distinct owners", "{:.0f}")}


@st.cache_data(show_spinner=False)
def lessons_by_slug():
    """Parsed lesson files (read-only data, safe to share between sessions)."""
    return {lesson.slug: lesson for lesson in load_lessons()}


def learner() -> str:
    """This browser's anonymous key: the same on a reload (a new session), so it shuffles options the same way.
    From its user agent and its address: behind a proxy the forwarded address (deploy/nginx.conf sets it), else
    the connection's (None on localhost). What is missing (a test harness sends nothing) counts as empty."""
    headers = st.context.headers
    parts = (headers.get("User-Agent"), headers.get("X-Forwarded-For"), st.context.ip_address)
    return learner_key(*(p if isinstance(p, str) else None for p in parts))


def _record_prediction(pkey: str, sess: PlaygroundSession) -> None:
    st.session_state[f"{pkey}_at"] = sess.step  # the training step at which the prediction was made


def measured(pkey: str, sess: PlaygroundSession, metric: str) -> float:
    """The predicted metric on this session's run (kept per trainer and step: a rerun does not measure again)."""
    stamp = (id(sess.trainer), sess.step)
    kept = st.session_state.get(f"{pkey}_measured")
    if kept is None or kept[0] != stamp:
        kept = st.session_state[f"{pkey}_measured"] = (stamp, metric_value(sess.trainer, metric))
    return kept[1]


def predict_box(predict: Predict, sess: PlaygroundSession, budget: int, preset_changed: bool, pkey: str,
                a_of_two: bool = False) -> None:
    """Predict, then run: the choice locks once training starts; the run's measured value decides.
    a_of_two: an A/B step, where the prediction is about A, the preset's run."""
    name, fmt = METRIC_NAMES[predict.metric]
    started = sess.running or sess.step > 0
    with st.container(border=True):
        st.markdown(f"**Predict, then run:** {predict.question}")
        if a_of_two:
            st.caption(":material/compare: This step trains two runs: the prediction is about **A**, this step's "
                       "preset, and is measured on A.")
        choice = st.radio("Your prediction", predict.options, index=None, key=pkey, disabled=started,
                          on_change=_record_prediction, args=(pkey, sess), label_visibility="collapsed")
        made_at = st.session_state.get(f"{pkey}_at", 0)
        if choice is None and not started:
            st.caption(":material/lock_open: Choose before you press Play: the choice locks once training starts.")
        elif choice is None:
            st.caption(":material/lock: Training started before a prediction. Press Reset to predict first.")
        elif made_at > 0:  # only a click that raced the lock can land here
            st.caption(f":material/lock: Your prediction was made at step {made_at:,}, after training started.")
        else:
            st.caption(":material/lock: Your prediction was made before training and is locked until Reset.")
        if sess.step < budget:
            if started:
                st.caption(f"The measured {name} appears here at step {budget:,}, this step's training budget.")
            return
        value = measured(pkey, sess, predict.metric)
        landed = predict.option_for(value)
        tail = f"mean of the last {TAIL_STEPS} steps, " if predict.metric in BATCH_METRICS else ""
        cols = st.columns(2)
        cols[0].markdown(f"**Your prediction**  \n{choice if choice is not None else '(none)'}")
        cols[1].markdown(f"**Measured** ({tail}{'on A, ' if a_of_two else ''}at step {sess.step:,})  \n"
                         f"{name} = {fmt.format(value)}: "
                         f"{predict.options[landed]}")
        if preset_changed:
            st.caption(":material/tune: Measured on your settings, which differ from this step's preset.")
        if choice is None:
            st.info(predict.explain, icon=":material/insights:")
        elif predict.options.index(choice) == landed:
            st.success(f"Your prediction holds. {predict.explain}", icon=":material/check_circle:")
        else:
            st.warning(f"The model says otherwise. {predict.explain}", icon=":material/help:")


def split_outcome(text: str) -> tuple[str, str]:
    """A step's prose before and after its '## What you will see' section: the part that gives away the answer
    to a prediction. ('', when the step has no such section.)"""
    found = re.search(r"^## What you will see[ \t]*$", text, flags=re.MULTILINE)
    return (text, "") if found is None else (text[:found.start()].rstrip(), text[found.end():].strip())


def go(slug: str | None, step: int = 1) -> None:
    st.query_params.clear()
    if slug is not None:
        st.query_params["lesson"] = slug
        st.query_params["step"] = str(step)


state.present_css()
try:
    lessons = lessons_by_slug()
except LessonError as err:
    st.error(f"A lesson file is malformed: {err}")
    st.stop()

slug = st.query_params.get("lesson")
if slug is not None and slug not in lessons:
    state.note_once(f"There is no lesson '{str(slug)[:60]}'; here is the list of lessons.")
    slug = None

if slug is None:  # ---- the index ------------------------------------------------------------------------
    st.title("Lessons")
    st.caption("From the 1991 mixture of experts to MoE in today's language models. Each step runs a real model.")
    state.show_notes()
    for i, lesson in enumerate(lessons.values(), start=1):
        with st.container(border=True):
            cols = st.columns([5, 1], vertical_alignment="center")
            cols[0].markdown(f"**{i}. {lesson.title}**  \n{lesson.summary}  \n"
                             f":material/schedule: about {lesson.minutes} min · {len(lesson.steps)} steps")
            cols[1].button("Start", key=f"start_{lesson.slug}", on_click=go, args=(lesson.slug, 1),
                           icon=":material/arrow_forward:", width="stretch")
    st.stop()

# ---- one step ----------------------------------------------------------------------------------------------
lesson = lessons[slug]
raw_step = st.query_params.get("step", "1")
try:
    number = int(raw_step)
except ValueError:
    number = 0
if not 1 <= number <= len(lesson.steps):
    state.note_once(f"Step '{str(raw_step)[:20]}' does not exist in '{lesson.title}' "
                    f"(it has steps 1 to {len(lesson.steps)}); showing step 1.")
    number = 1
    st.query_params["step"] = "1"
step = lesson.steps[number - 1]

key = f"lesson::{slug}::{number}"
if st.session_state.get("lesson_key") != key:  # a new step: a fresh model from the step's preset
    st.session_state["lesson_key"] = key
    st.session_state["lesson_sess"] = PlaygroundSession(step.settings)
    # an A/B step: B, the preset with the step's `compare` changes, on the same data and seed
    st.session_state["lesson_sess_b"] = PlaygroundSession(step.settings_b) if step.compare else None
    st.session_state.pop("les__synced", None)
    live.forget_view_state(st.session_state.get("lesson_views_key", "les"))
    # A new key per step: the browser keeps a widget's last value under its old key, so the step's own views
    # would otherwise give way to the previous step's choice.
    st.session_state["lesson_views_key"] = f"les{st.session_state.get('lesson_steps_seen', 0)}"
    st.session_state["lesson_steps_seen"] = st.session_state.get("lesson_steps_seen", 0) + 1
sess: PlaygroundSession = st.session_state["lesson_sess"]
sess_b: PlaygroundSession | None = st.session_state.get("lesson_sess_b")
titles = ("", "")

with st.sidebar:
    st.caption(f"Controls for this step ({len(step.unlocked)} unlocked)")
    if sess_b is not None:
        titles = pair.side_titles(step.settings, step.settings_b, step.compare_labels)
        differ = "; ".join(f"{label}: A {pair.shown_value(va)}, B {pair.shown_value(vb)}"
                           for label, va, vb in pair.differences(step.settings, step.settings_b))
        st.caption(f":material/compare: Two runs, A and B: these controls set both alike. They differ only in "
                   f"{differ}, fixed for this step.")
    trainers_before = (sess.trainer, sess_b.trainer if sess_b is not None else None)
    controls.render_controls(sess, prefix="les", unlocked=set(step.unlocked), highlight=set(step.highlight),
                             allow_upload=False)
    if sess_b is not None:
        pair.follow(sess, sess_b, step.compare)
        note = pair.align(sess, sess_b, trainers_before)
        if note:
            state.note_once(note)

st.button("All lessons", on_click=go, args=(None,), icon=":material/arrow_back:", type="tertiary")
st.title(f"{lesson.title}")
st.progress(number / len(lesson.steps), text=f"Step {number} of {len(lesson.steps)}: {step.title}")
state.show_notes()
setup, outcome = split_outcome(step.text) if step.predict is not None else (step.text, "")
st.markdown(setup)
if outcome and sess.step >= step.budget:  # the prediction is settled: the outcome is part of the prose again
    st.markdown(f"## What you will see\n{outcome}")
elif outcome:
    with st.expander("What you will see: it gives the prediction away, so read it after training",
                     icon=":material/visibility_off:"):
        st.markdown(outcome)
if step.predict is not None:  # first: "Try this" says Press Play, and training locks the prediction
    predict_box(step.predict, sess, step.budget, sess.settings != step.settings, f"predict_{key}",
                a_of_two=sess_b is not None)
st.info(f"**Try this:** {step.try_this}", icon=":material/touch_app:")

live.transport(sess, key="les", partner=sess_b)
if sess_b is None:
    live.live_area(sess, key=st.session_state["lesson_views_key"], default_views=step.views,
                   allowed_views=step.views, stop_at=step.budget or None)
else:
    pair.pair_area(sess, sess_b, key=st.session_state["lesson_views_key"], titles=titles, default_views=step.views,
                   allowed_views=step.views, stop_at=step.budget or None)

if step.check is not None and step.predict is not None and not (sess.running or sess.step > 0):
    with st.container(border=True):  # the question or its options could give the prediction away
        st.caption(":material/quiz: A check question appears here once training has started and your prediction "
                   "is locked.")
elif step.check is not None:
    check = step.check
    with st.container(border=True):
        st.markdown(f"**Check:** {check.question}")
        shown = [check.options[i] for i in option_order(check.question, learner(), len(check.options))]
        choice = st.radio("Your answer", shown, index=None, key=f"check_{key}", label_visibility="collapsed")
        if choice is not None:  # by identity, not by position: options differ (moe_core.lessons.lesson_files checks it)
            picked = check.options.index(choice)
            if picked == check.answer:
                st.success(f"Right. {check.feedback[picked]}", icon=":material/check_circle:")
            else:
                st.warning(f"Not quite. {check.feedback[picked]}", icon=":material/help:")

if lesson.at_scale is not None:  # the lesson's idea in real models, on every step of the lesson
    with st.expander("At scale: the same idea in real models", icon=":material/public:"):
        st.markdown(lesson.at_scale.text)
        st.markdown(f"**What does not transfer from the toy.** {lesson.at_scale.caveat}")
        st.caption("Sources: " + " · ".join(lesson.at_scale.sources))

with st.expander("Show the code", icon=":material/code:"):
    st.caption(f"`{step.code}`: the function this step runs.")
    st.code(inspect.getsource(resolve_code(step.code)), language="python")

nav = st.columns([1, 1, 3])
nav[0].button("Previous", on_click=go, args=(slug, number - 1), disabled=number == 1, icon=":material/arrow_back:",
              key="les_prev", width="stretch")
nav[1].button("Next", on_click=go, args=(slug, number + 1), disabled=number == len(lesson.steps),
              icon=":material/arrow_forward:", key="les_next", type="primary", width="stretch")
nav[2].caption(f"Link to this step: `?lesson={slug}&step={number}`")
