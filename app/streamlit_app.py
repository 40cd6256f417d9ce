"""MoE Playground: train a Mixture-of-Experts model live and watch it route.

    streamlit run app/streamlit_app.py

A tiny entrypoint in the style of `streamlit hello`: fix torch's threads once for the whole server, set
the page up (presenter mode collapses the sidebar), and hand over to st.navigation.
"""

import streamlit as st
import torch
from moe_ui.state import presenter_mode

torch.set_num_threads(1)  # one per training chunk; the other core serves the UI and other sessions

st.set_page_config(
    page_title="MoE Playground",
    page_icon=":material/hub:",
    layout="wide",
    initial_sidebar_state="collapsed" if presenter_mode() else "auto",
)

pages = {
    "Explore": [
        st.Page("app_pages/playground.py", title="Playground", icon=":material/play_circle:", default=True),
        st.Page("app_pages/compare.py", title="Compare", icon=":material/compare:"),
        st.Page("app_pages/real_models.py", title="Real models", icon=":material/neurology:"),
    ],
    "Learn": [
        st.Page("app_pages/lessons.py", title="Lessons", icon=":material/school:"),
        st.Page("app_pages/reference.py", title="Reference", icon=":material/menu_book:"),
    ],
}
st.navigation(pages).run()
