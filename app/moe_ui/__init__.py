"""Streamlit-side helpers of the MoE Playground: session state, controls and view layout.

Everything that computes lives in moe_core; this package only wires widgets to it.
"""
