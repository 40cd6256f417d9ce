"""Real models: how a pretrained MoE language model routes, read through transformers' output_router_logits.

The model is loaded once per server process and shared read-only (moe_core.real_models.loading); what each
learner typed and the routing of it live in their own session only.
"""

import streamlit as st
from moe_ui import state

from moe_core.figures import real_models as fig
from moe_core.figures.language import expert_legend_html
from moe_core.real_models import FAMILIES, RefusedError, load_model, read_policy, route_text, sample_texts
from moe_core.real_models import specialisation as route_sample
from moe_core.real_models.families import UNSUPPORTED
from moe_core.training.step_cost import matmul_flops_per_second

# Small real MoE models (total / active parameters from their model cards and papers), for the size table.
LAPTOP_MODELS = (
    ("ibm-granite/granite-3.1-1b-a400m-base", "Granite-MoE", 1.33e9, 0.4e9, "32 experts, top-8"),
    ("ibm-granite/granite-3.1-3b-a800m-base", "Granite-MoE", 3.3e9, 0.8e9, "40 experts, top-8"),
    ("allenai/OLMoE-1B-7B-0924", "OLMoE (Muennighoff et al. 2024)", 6.92e9, 1.3e9, "64 experts, top-8"),
)
OWN_TEXT = "my own text"
DEFAULT_TEXT = "def area(r):\n    return 3.14 * r ** 2\nThe morning train was late again. Das Rad drehte sich wieder."

state.present_css()
st.title("Real models")
st.caption("How a pretrained Mixture-of-Experts language model routes your text: its own router logits, read "
           "through transformers' `output_router_logits=True`, turned into experts and gate weights by the "
           "family's own rule. The colours and charts are the Playground's, so the toy and the real model read "
           "alike.")

try:
    policy = read_policy()
except ValueError as err:
    st.error(f"The server's real-models config is broken: {err}")
    st.stop()

names = list(policy.allowed)
left, right = st.columns([2, 1])
with left:
    choice = st.selectbox("Model", names, key="rm_model", help="The models this server's administrator allows.",
                          placeholder="no model is allowed on this server") if names else None
    custom = st.text_input("…or a model id or local folder", key="rm_custom",
                           help="Local folders are allowed on this server.") if policy.allow_local_paths else ""
    model_name = (custom or "").strip() or choice
with right:
    samples = sample_texts()
    pick = st.selectbox("Sample text", [OWN_TEXT, *samples], key="rm_sample",
                        help="A few lines of the project's own multi-domain sample.")
if not names and not policy.allow_local_paths:
    st.info("This server allows no models yet: the administrator lists them in the real-models config "
            "(docs/deploy.md, 'Real models').")
    st.stop()

st.session_state.setdefault("rm_text", DEFAULT_TEXT)
if pick != OWN_TEXT and st.session_state.get("rm_last_pick") != pick:
    st.session_state["rm_text"] = samples[pick]
st.session_state["rm_last_pick"] = pick
text = st.text_area("Text", key="rm_text", height=120, max_chars=policy.max_chars,
                    placeholder="Type a sentence, some code or a formula…")


def load(name: str):
    """The shared model, with a progress bar while its files download (cached copies load without one)."""
    bar = st.progress(0.0, text=f"Loading {name}…")
    try:
        return load_model(name, policy, progress=lambda done, total: bar.progress(
            min(done / total, 1.0), text=f"Downloading {name}: {done / 1e9:.2f} of {total / 1e9:.2f} GB"))
    finally:
        bar.empty()


if st.button("Route", type="primary", icon=":material/alt_route:", disabled=not model_name):
    try:
        with st.spinner("Running the model…"):
            loaded = load(model_name)
            st.session_state["rm_result"] = route_text(loaded, text, policy.max_chars)
        st.session_state.pop("rm_spec", None)
    except RefusedError as err:
        st.session_state.pop("rm_result", None)
        st.error(str(err))

routing = st.session_state.get("rm_result")
if routing is not None:
    st.markdown(f"**{routing.model}** ({routing.family}): {len(routing.tokens)} tokens, {routing.n_experts} experts, "
                f"top-{routing.top_k}, {len(routing.layers)} MoE layers; forward pass {routing.seconds:.2f} s.")
    layer_ids = [lr.layer for lr in routing.layers]
    if st.session_state.get("rm_layer") not in layer_ids:  # another model: its own layers
        st.session_state.pop("rm_layer", None)
    at = st.select_slider("Decoder layer", layer_ids, key="rm_layer") if len(layer_ids) > 1 else layer_ids[0]
    i = layer_ids.index(at)
    st.subheader("Tokens by first-choice expert")
    st.caption("As in Mixtral's Fig. 8 (Jiang et al. 2024, §5): each token's colour is its first-choice expert "
               "in this layer. Hover a token for its top-k experts and the gate weights the model applies.")
    st.markdown(fig.tokens_html(routing, i), unsafe_allow_html=True)
    st.markdown(expert_legend_html(routing.n_experts), unsafe_allow_html=True)
    c1, c2 = st.columns(2)
    c1.plotly_chart(fig.load_bars(routing, i), key="rm_load")
    c2.plotly_chart(fig.co_activation(routing, i), key="rm_coact")
    c3, c4 = st.columns(2)
    c3.plotly_chart(fig.layer_profile(routing), key="rm_profile")
    c4.plotly_chart(fig.load_heatmap(routing), key="rm_heatmap")

    st.subheader("Specialisation on the shipped sample")
    st.caption("Four short texts the project wrote itself (code, maths, English prose, German), each routed on its "
               "own. I(expert; domain) is 0 nats when the experts ignore the domain and ln 4 ≈ 1.39 at most. OLMoE's "
               "authors find domain specialisation in their trained model (Muennighoff et al. 2024, §5.3), "
               "Mixtral's none by topic (Jiang et al. 2024, §5). With a few hundred tokens per domain even random "
               "weights give I > 0 (the domains use different tokens): compare layers and models, not against 0.")
    if st.button("Route the sample", icon=":material/category:"):
        try:
            with st.spinner("Routing four texts…"):
                st.session_state["rm_spec"] = route_sample(load(routing.model))
        except RefusedError as err:
            st.error(str(err))
    spec = st.session_state.get("rm_spec")
    if spec is not None:
        c5, c6 = st.columns(2)
        c5.plotly_chart(fig.specialisation(spec, i), key="rm_spec_map")
        c6.plotly_chart(fig.mi_by_layer(spec), key="rm_mi")

with st.expander("Models small enough for a laptop CPU", icon=":material/laptop:"):
    rate = matmul_flops_per_second()
    rows = [{"model": m, "family": fam, "parameters": f"{total / 1e9:.1f} B ({active / 1e9:.1f} B active)",
             "experts": experts, "weights in bf16": f"{2 * total / 1e9:.1f} GB",
             "forward, 100 tokens (estimate)": f"≥ {2 * active * 100 / rate:.1f} s"}
            for m, fam, total, active, experts in LAPTOP_MODELS]
    st.dataframe(rows, hide_index=True)
    st.caption(f"Estimates, not measurements: 2 × active parameters × tokens FLOPs at this server's measured "
               f"single-thread matmul rate ({rate / 1e9:.0f} GFLOP/s in float32); bf16 on a CPU, attention and "
               "the routing itself only add to it. The memory check refuses a model whose weights do not fit in "
               "the memory available.")

with st.expander("Supported families and their gate rules", icon=":material/alt_route:"):
    for f in FAMILIES.values():
        st.markdown(f"- **{f.name}** (`{f.model_type}`): {f.rule_text}")
    st.markdown("Not supported: " + "; ".join(f"`{k}`: {v}" for k, v in UNSUPPORTED.items()) + ".")
