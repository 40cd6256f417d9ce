"""The Playground: every control, every view, training live."""

import streamlit as st
from moe_ui import controls, live, state, views

state.present_css()
sess = state.get_session("play")
with st.sidebar:
    controls.render_controls(sess, prefix="ctl", hidden=state.hidden_controls())

st.title("MoE Playground")
st.caption("A router sends each input to a few experts. Press **Play** and watch who gets what: "
           "sparsity, routing and load balancing, live.")
state.show_notes()


@st.fragment
def speed_and_share() -> None:
    """Speed, the address bar and the Share link. Moving Speed reruns this fragment alone: the change is live
    and redraws nothing else, where a full run of a training page (the sidebar, the tick, four charts) costs a
    class's server about 50 ms more."""
    cols = st.columns([2, 1], vertical_alignment="bottom")
    with cols[0]:
        controls.render_speed(sess, prefix="ctl")
    state.sync_url(sess.settings)
    with cols[1], st.popover("Share", icon=":material/link:", width="stretch"):
        st.caption("This link reproduces these settings exactly (same seed, same run):")
        st.code(state.share_url(sess.settings), language=None, wrap_lines=True)


def config() -> dict:
    model, data, train = sess.settings.to_configs()
    return {"settings": vars(sess.settings), "model": model.to_dict(), "data": data.to_dict(), "train": vars(train)}


top = st.columns([3, 3], vertical_alignment="bottom")
with top[0]:
    live.transport(sess, key="play")
with top[1]:
    speed_and_share()

live.live_area(sess, key="play", in_sync=lambda: state.url_in_sync(sess.settings))

with st.expander("Downloads", icon=":material/download:"):
    views.downloads(sess.latest, sess.trainer.history, config, "play")
