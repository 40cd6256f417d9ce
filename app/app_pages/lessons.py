"""Lessons: step-through explanations tied to a live model. ?lesson=<slug>&step=<n> links to any step."""

import inspect

import streamlit as st
from moe_ui import controls, live, state

from moe_core.lessons import LessonError, load_lessons, resolve_code
from moe_core.session import PlaygroundSession


@st.cache_data(show_spinner=False)
def lessons_by_slug():
    """Parsed lesson files (read-only data, safe to share between sessions)."""
    return {lesson.slug: lesson for lesson in load_lessons()}


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
    st.session_state.pop("les__synced", None)
    live.forget_view_state(st.session_state.get("lesson_views_key", "les"))
    # A new key per step: the browser keeps a widget's last value under its old key, so the step's own views
    # would otherwise give way to the previous step's choice.
    st.session_state["lesson_views_key"] = f"les{st.session_state.get('lesson_steps_seen', 0)}"
    st.session_state["lesson_steps_seen"] = st.session_state.get("lesson_steps_seen", 0) + 1
sess: PlaygroundSession = st.session_state["lesson_sess"]

with st.sidebar:
    st.caption(f"Controls for this step ({len(step.unlocked)} unlocked)")
    controls.render_controls(sess, prefix="les", unlocked=set(step.unlocked), highlight=set(step.highlight),
                             allow_upload=False)

st.button("All lessons", on_click=go, args=(None,), icon=":material/arrow_back:", type="tertiary")
st.title(f"{lesson.title}")
st.progress(number / len(lesson.steps), text=f"Step {number} of {len(lesson.steps)}: {step.title}")
state.show_notes()
st.markdown(step.text)
st.info(f"**Try this:** {step.try_this}", icon=":material/touch_app:")

live.transport(sess, key="les")
live.live_area(sess, key=st.session_state["lesson_views_key"], default_views=step.views, allowed_views=step.views,
               stop_at=step.budget or None)

if step.check is not None:
    with st.container(border=True):
        st.markdown(f"**Check:** {step.check.question}")
        choice = st.radio("Your answer", step.check.options, index=None, key=f"check_{key}",
                          label_visibility="collapsed")
        if choice is not None:
            if step.check.options.index(choice) == step.check.answer:
                st.success(f"Right. {step.check.explain}", icon=":material/check_circle:")
            else:
                st.warning(f"Not quite. {step.check.explain}", icon=":material/help:")

with st.expander("Show the code", icon=":material/code:"):
    st.caption(f"`{step.code}`: the function this step runs.")
    st.code(inspect.getsource(resolve_code(step.code)), language="python")

nav = st.columns([1, 1, 3])
nav[0].button("Previous", on_click=go, args=(slug, number - 1), disabled=number == 1, icon=":material/arrow_back:",
              key="les_prev", width="stretch")
nav[1].button("Next", on_click=go, args=(slug, number + 1), disabled=number == len(lesson.steps),
              icon=":material/arrow_forward:", key="les_next", type="primary", width="stretch")
nav[2].caption(f"Link to this step: `?lesson={slug}&step={number}`")
