"""The Playground: every control, every view, training live."""

import streamlit as st
from moe_ui import controls, live, state, views

state.present_css()
sess = state.get_session("play")
with st.sidebar:
    controls.render_controls(sess, prefix="ctl", hidden=state.hidden_controls())
state.sync_url(sess.settings)

st.title("MoE Playground")
st.caption("A router sends each input to a few experts. Press **Play** and watch who gets what: "
           "sparsity, routing and load balancing, live.")
state.show_notes()

top = st.columns([3, 2, 1], vertical_alignment="bottom")
with top[0]:
    live.transport(sess, key="play")
with top[1]:
    controls.render_speed(sess, prefix="ctl")
with top[2], st.popover("Share", icon=":material/link:", width="stretch"):
    st.caption("This link reproduces these settings exactly (same seed, same run):")
    st.code(state.share_url(sess.settings), language=None, wrap_lines=True)

live.live_area(sess, key="play")

with st.expander("Downloads", icon=":material/download:"):
    model, data, train = sess.settings.to_configs()
    config = {"settings": vars(sess.settings), "model": model.to_dict(), "data": data.to_dict(), "train": vars(train)}
    views.downloads(sess.latest, sess.trainer.history, config, "play")
