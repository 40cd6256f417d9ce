"""Compare: two configurations on the same data and seed, trained side by side, views aligned."""

import streamlit as st
from moe_ui import controls, live, pair, state

from moe_core.lessons.lesson_files import SAME_DATA_FIELDS
from moe_core.training.session import PlaygroundSession
from moe_core.training.settings import PlaygroundSettings

state.present_css()
st.title("Compare two configurations")
st.caption("Same data, same seed: only what you change differs. Differences are highlighted below.")

if "cmp_a" not in st.session_state:
    st.session_state["cmp_a"] = PlaygroundSession(PlaygroundSettings(aux_loss_coef=0.0))
    st.session_state["cmp_b"] = PlaygroundSession(PlaygroundSettings(aux_loss_coef=0.01))
a: PlaygroundSession = st.session_state["cmp_a"]
b: PlaygroundSession = st.session_state["cmp_b"]

trainers_before = (a.trainer, b.trainer)
left, right = st.columns(2)
with left, st.expander("Configuration A", expanded=False, icon=":material/tune:"):
    controls.render_controls(a, prefix="cmpa", allow_upload=False)
pair.keep_same_data(a, b)
with right, st.expander("Configuration B", expanded=False, icon=":material/tune:"):
    other = set(vars(b.settings)) - set(SAME_DATA_FIELDS)
    controls.render_controls(b, prefix="cmpb", unlocked=other, allow_upload=False)
note = pair.align(a, b, trainers_before)
if note:
    state.note_once(note)
state.show_notes()

diff = pair.differences(a.settings, b.settings)
if diff:
    shown = (f"{label}: A = `{pair.shown_value(va)}`, B = `{pair.shown_value(vb)}`" for label, va, vb in diff)
    st.markdown("**What differs:** " + "; ".join(shown))
else:
    st.info("A and B are identical: change something in one of them.")

live.transport(a, key="cmp", partner=b)
pair.pair_area(a, b, key="cmp", titles=pair.side_titles(a.settings, b.settings), default_views=["load", "curves"])
