"""Reference: every router, loss, capacity rule and metric in one place, printed from the code itself."""

import inspect

import streamlit as st
from moe_ui import state
from moe_ui.controls import ROUTER_LABELS

from moe_core.layer import capacity, experts, metrics, moe_layer, routers
from moe_core.layer.routers import base as router_base
from moe_core.lessons.lesson_files import load_glossary

state.present_css()
st.title("Reference")
st.caption("The formulas below are the docstrings of the code the app runs, so they cannot drift from it.")

tab_layer, tab_routers, tab_losses, tab_capacity, tab_glossary = st.tabs(
    ["The layer", "Routers", "Losses and metrics", "Capacity", "Glossary"])
with tab_layer:
    st.code(inspect.getdoc(moe_layer), language=None, wrap_lines=True)
    st.code(inspect.getsource(moe_layer.MoELayer.route_and_mix), language="python")
    st.caption("Step 2, `capacity.assign_slots`, and step 4, the experts (`experts.SwiGLUExperts.forward`):")
    st.code(inspect.getsource(capacity.assign_slots), language="python")
    st.code(inspect.getsource(experts.SwiGLUExperts.forward), language="python")
with tab_routers:
    for name, cls in routers.ROUTER_CLASSES.items():
        with st.expander(ROUTER_LABELS[name], icon=":material/alt_route:"):
            st.code(inspect.getdoc(inspect.getmodule(cls)), language=None, wrap_lines=True)
            if st.toggle("Show the code", key=f"ref_code_{name}"):
                source = inspect.getsource(cls)
                st.code(source, language="python")
                if "softmax_topk(" in source:  # the steps this router shares with the other softmax routers
                    st.caption("`softmax_topk`, shared with the other softmax routers:")
                    st.code(inspect.getsource(router_base.softmax_topk), language="python")

with tab_losses:
    for fn in (metrics.load_balancing_loss, metrics.z_loss, metrics.cv_squared, metrics.load_cv,
               metrics.max_violation, metrics.dropped_fraction, metrics.router_entropy, metrics.usage_entropy,
               metrics.mutual_information, metrics.co_activation, metrics.parameter_counts,
               metrics.flops_per_token):
        with st.expander(f"`{fn.__name__}`", icon=":material/functions:"):
            st.code(inspect.getdoc(fn), language=None, wrap_lines=True)
            if st.toggle("Show the code", key=f"ref_code_{fn.__name__}"):
                st.code(inspect.getsource(fn), language="python")

with tab_capacity:
    st.code(inspect.getdoc(capacity), language=None, wrap_lines=True)
    st.code(inspect.getsource(capacity.expert_capacity), language="python")

with tab_glossary:
    for term, definition in load_glossary().items():
        st.markdown(f"**{term}** — {definition}")
