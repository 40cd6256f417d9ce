"""The Playground's controls: one widget per PlaygroundSettings field, grouped, each with a help tooltip.

Widgets hold their values under keys "<prefix>_<field>". Each run: sync widgets from the session's settings
if those changed elsewhere (a reset, a lesson preset), draw the widgets, then turn their values back into
settings and apply them — live when no shape changes, else with a reset and a visible notice.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import streamlit as st

from moe_core.layer.config import BF16_ROUTERS, CAUSAL_ROUTERS, ROUTERS
from moe_core.training.datasets import DATASETS, CSVError, parse_points_csv
from moe_core.training.session import PlaygroundSession
from moe_core.training.settings import CONTROL_BY_FIELD, PlaygroundSettings, settings_fields
from moe_ui.state import note_once, once_per_click

AUX_STEPS = [0.0, 1e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0]
Z_STEPS = [0.0, 1e-4, 1e-3, 1e-2, 0.1]
BIAS_STEPS = [0.0, 1e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1]
LR_STEPS = [1e-4, 3e-4, 1e-3, 3e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0]
BATCH_STEPS = [16, 32, 64, 128, 256, 512, 1024]
HIDDEN_STEPS = [4, 8, 16, 32, 64, 128, 256]
FORCED_TOP_K = {"switch": 1, "gshard_top2": 2}  # routers whose paper fixes k (MoEConfig enforces it)
ROUTER_LABELS = {
    "softmax_topk": "softmax top-k (Mixtral)",
    "gshard_top2": "GShard top-2 (Lepikhin 2020)",
    "noisy_topk": "noisy top-k (Shazeer 2017)",
    "switch": "switch, top-1 (Fedus 2021)",
    "expert_choice": "expert choice (Zhou 2022)",
    "hash": "hash, fixed table (Roller 2021)",
    "soft": "soft MoE (Puigcerver 2023)",
    "sigmoid_bias": "sigmoid + bias (DeepSeek-V3)",
    "dense": "dense soft mixture (after Jacobs 1991)",
}


def _key(prefix: str, field: str) -> str:
    return f"{prefix}_{field}"


def _sync_widgets(sess: PlaygroundSession, prefix: str) -> None:
    """Point the widgets at the session's settings when those changed outside the widgets.

    Streamlit forgets the value of a widget that was not drawn in the last run (Noise and Classes while the
    data set has none, Top-k under the switch router). Such a key is restored from the settings, which still
    hold the learner's value. And a widget that comes back is drawn by the browser at its default (the
    slider's minimum) unless its value was written in that very run, so every key is written every run."""
    s = sess.settings
    state = st.session_state
    if state.get(f"{prefix}__synced") != s:
        for name in settings_fields():
            state[_key(prefix, name)] = getattr(s, name)
        state[_key(prefix, "limit_capacity")] = s.capacity_factor is not None
        state[f"{prefix}__synced"] = s
    for name in settings_fields():  # written every run: see the docstring
        state[_key(prefix, name)] = state.get(_key(prefix, name), getattr(s, name))
    state[_key(prefix, "limit_capacity")] = state.get(_key(prefix, "limit_capacity"), s.capacity_factor is not None)
    if state[_key(prefix, "capacity_factor")] is None:  # dropless: the hidden slider keeps the last factor used
        state[_key(prefix, "capacity_factor")] = state.get(f"{prefix}__last_capacity", 1.25)


def _with(options: list, value: Any) -> list:
    return sorted(set(options) | ({value} if value is not None else set()))


def render_controls(
    sess: PlaygroundSession,
    prefix: str = "ctl",
    hidden: set[str] = frozenset(),  # URL names of controls not to show
    unlocked: set[str] | None = None,  # settings fields that may be touched (None = all)
    highlight: set[str] = frozenset(),  # settings fields to point at (lessons)
    allow_upload: bool = True,
) -> None:
    _sync_widgets(sess, prefix)
    state = st.session_state

    def show(field: str) -> bool:
        return CONTROL_BY_FIELD[field].url not in hidden

    def kw(field: str) -> dict[str, Any]:
        c = CONTROL_BY_FIELD[field]
        return {"key": _key(prefix, field), "help": c.help,
                "disabled": unlocked is not None and field not in unlocked}

    def boxed(field: str):
        if field in highlight:
            box = st.container(border=True)
            box.caption(":material/touch_app: **Try this control**")
            return box
        return nullcontext()

    def control(field: str, draw: Callable[[], Any]) -> None:
        if show(field):
            with boxed(field):
                draw()

    # ---- data --------------------------------------------------------------------------------------
    st.subheader("Data", divider="gray")
    control("dataset", lambda: st.selectbox("Dataset", list(DATASETS), **kw("dataset")))
    info = DATASETS[state[_key(prefix, "dataset")]]
    if show("dataset"):
        st.caption(info.description)
    if info.task != "language":
        control("noise", lambda: st.slider("Noise", 0.0, 1.0, step=0.05, **kw("noise")))
        if info.n_classes_range is not None:
            lo, hi = info.n_classes_range
            hi = min(hi, 8)
            state[_key(prefix, "n_classes")] = min(max(state[_key(prefix, "n_classes")], lo), hi)
            label = "Arms" if info.name == "spirals" else "Classes"
            control("n_classes", lambda: st.slider(label, lo, hi, **kw("n_classes")))

    def seed_row() -> None:
        cols = st.columns(2, vertical_alignment="bottom")
        cols[0].number_input("Seed", 0, 999_999, step=1, **kw("seed"))
        cols[1].button("New data", key=f"{prefix}__regen", on_click=_bump_seed, args=(prefix,), width="stretch",
                       disabled=kw("seed")["disabled"], help="Draw a fresh data set and start again (seed + 1).")

    control("seed", seed_row)
    if allow_upload and info.task != "language" and "upload" not in hidden:
        _csv_upload(sess, prefix)

    # ---- routing -------------------------------------------------------------------------------------
    st.subheader("Routing", divider="gray")
    allowed = CAUSAL_ROUTERS if info.task == "language" else ROUTERS
    if state[_key(prefix, "router")] not in allowed:
        note_once(f"The {state[_key(prefix, 'router')]} router is non-causal and cannot run a language model; "
                  "switched to softmax top-k.")
        state[_key(prefix, "router")] = "softmax_topk"
    control("router", lambda: st.selectbox("Router", list(allowed), format_func=ROUTER_LABELS.get, **kw("router")))
    if info.task == "language" and show("router"):
        st.caption("Expert choice and Soft MoE are not offered here: they decide over the whole batch, so a token's "
                   "route would depend on later characters (lesson 7).")
    router = state[_key(prefix, "router")]
    min_experts = 2 if router == "gshard_top2" else 1  # GShard picks two different experts per token
    if state[_key(prefix, "n_experts")] < min_experts:
        state[_key(prefix, "n_experts")] = min_experts
        note_once("GShard's top-2 router needs at least 2 experts; experts set to 2.")
    control("n_experts", lambda: st.slider("Experts", min_experts, 64, **kw("n_experts")))
    n_experts = state[_key(prefix, "n_experts")]
    k_key = _key(prefix, "top_k")
    _keep_k_across_forced(prefix, router, n_experts)
    state[k_key] = min(max(1, state[k_key]), n_experts)
    if n_experts == 1 or router in FORCED_TOP_K or router in ("dense", "soft"):
        why = {"switch": "the switch router is top-1", "dense": "the dense mixture runs every expert",
               "gshard_top2": "GShard's router is top-2; its 2nd expert is kept at random, with probability "
                              "2·g₂ (its normalized weight g₂), in training",
               "soft": "Soft MoE mixes every expert's slots"}.get(router, "there is only one expert")
        if show("top_k"):
            k_shown = f"all {n_experts}" if router in ("dense", "soft") and n_experts > 1 else state[k_key]
            st.caption(f"Top-k: {k_shown} ({why})")
    else:
        control("top_k", lambda: st.slider("Top-k", 1, n_experts, **kw("top_k")))

    def capacity() -> None:
        limit = st.toggle("Limit expert capacity", key=_key(prefix, "limit_capacity"),
                          disabled=kw("capacity_factor")["disabled"],
                          help="Off = dropless: every token reaches its experts however unbalanced.")
        if limit:
            st.slider("Capacity factor", 0.25, 4.0, step=0.05, **kw("capacity_factor"))

    control("capacity_factor", capacity)
    if state[_key(prefix, "limit_capacity")]:  # who keeps a slot matters only when slots can run out
        control("overflow_policy", lambda: st.radio("Overflow priority", ["position", "probability"],
                                                    horizontal=True, **kw("overflow_policy")))

    # ---- balancing -----------------------------------------------------------------------------------
    st.subheader("Balancing", divider="gray")
    for field, label, steps in (("aux_loss_coef", "Balancing loss", AUX_STEPS), ("z_loss_coef", "Router z-loss",
                                                                                    Z_STEPS)):
        control(field, lambda f=field, lb=label, sp=steps: st.select_slider(
            lb, _with(sp, state[_key(prefix, f)]), format_func=lambda v: f"{v:g}", **kw(f)))
    if router == "gshard_top2":  # the router reads neither: its randomness is the draw of the 2nd expert
        if show("router_noise") or show("normalize_topk"):
            st.caption("GShard's router always renormalizes its two gates and adds no noise: its randomness is "
                       "the draw that keeps the 2nd expert.")
    else:
        control("router_noise", lambda: st.slider("Router noise", 0.0, 1.0, step=0.01, **kw("router_noise")))
    if router == "sigmoid_bias":
        control("bias_update_rate", lambda: st.select_slider(
            "Bias update rate", _with(BIAS_STEPS, state[_key(prefix, "bias_update_rate")]),
            format_func=lambda v: f"{v:g}", **kw("bias_update_rate")))
    if router != "gshard_top2":
        control("normalize_topk", lambda: st.toggle(CONTROL_BY_FIELD["normalize_topk"].label,
                                                    **kw("normalize_topk")))
    if router in BF16_ROUTERS:  # the others compute their router in float32 only (moe_core.layer.config)
        control("router_dtype", lambda: st.radio(CONTROL_BY_FIELD["router_dtype"].label,
                                                 list(CONTROL_BY_FIELD["router_dtype"].choices), horizontal=True,
                                                 **kw("router_dtype")))

    # ---- model and training ---------------------------------------------------------------------------
    st.subheader("Model and training", divider="gray")
    control("n_shared_experts", lambda: st.slider("Shared experts", 0, 4, **kw("n_shared_experts")))
    control("expert_hidden", lambda: st.select_slider(
        "Expert width", _with(HIDDEN_STEPS, state[_key(prefix, "expert_hidden")]), **kw("expert_hidden")))
    control("n_layers", lambda: st.slider("Layers", 1, 4, **kw("n_layers")))
    control("lr", lambda: st.select_slider("Learning rate", _with(LR_STEPS, state[_key(prefix, "lr")]),
                                           format_func=lambda v: f"{v:g}", **kw("lr")))
    control("batch_size", lambda: st.select_slider(
        "Batch size", _with(BATCH_STEPS, state[_key(prefix, "batch_size")]), **kw("batch_size")))

    _apply_widgets(sess, prefix)


def _keep_k_across_forced(prefix: str, router: str, n_experts: int) -> None:
    """Switch forces top-1 and GShard top-2 (FORCED_TOP_K); leaving them gives the learner's top-k back (or the
    default), with a notice."""
    state = st.session_state
    k_key, memory, forced_key = _key(prefix, "top_k"), f"{prefix}__k_before_forced", f"{prefix}__k_forced_by"
    forced = FORCED_TOP_K.get(router)
    if forced is not None:
        if memory not in state:
            state[memory] = state[k_key] if state[k_key] != forced else PlaygroundSettings().top_k
        state[k_key], state[forced_key] = forced, router
    elif memory in state:
        k, by = min(state.pop(memory), n_experts), state.pop(forced_key, "switch")
        forced = FORCED_TOP_K.get(by, 1)
        if state[k_key] == forced and k != forced:
            state[k_key] = k
            name = {"switch": "switch", "gshard_top2": "GShard top-2"}.get(by, by)
            note_once(f"Top-k is back to {k}: the {name} router had set it to {forced}.")


@once_per_click
def _bump_seed(prefix: str) -> None:
    key = _key(prefix, "seed")
    st.session_state[key] = (st.session_state.get(key, 0) + 1) % 1_000_000


def _csv_upload(sess: PlaygroundSession, prefix: str) -> None:
    with st.expander("Your own points (CSV)", expanded=sess.custom_dataset is not None):
        st.caption("Columns `x,y,label` (classification) or `x,y,target` (regression); up to 20,000 rows.")
        upload = st.file_uploader("CSV file", type=["csv", "txt"], key=f"{prefix}__csv",
                                  help="Points are rescaled to [-1, 1] on each axis.")
        if upload is not None and st.session_state.get(f"{prefix}__csv_id") != upload.file_id:
            st.session_state[f"{prefix}__csv_id"] = upload.file_id
            try:
                dataset = parse_points_csv(upload.getvalue())
            except CSVError as err:
                st.session_state[f"{prefix}__csv_problems"] = [str(p) for p in err.problems]
            else:
                st.session_state[f"{prefix}__csv_problems"] = []
                sess.set_dataset(dataset)
        problems = st.session_state.get(f"{prefix}__csv_problems", [])
        if problems:
            st.error("This file could not be used:\n\n" + "\n".join(f"- {p}" for p in problems))
        if sess.custom_dataset is not None:
            st.success(f"Training on your {sess.custom_dataset.n_train + sess.custom_dataset.n_test} points.")
            if st.button("Back to generated data", key=f"{prefix}__csv_clear"):
                st.session_state.pop(f"{prefix}__csv_id", None)
                sess.set_dataset(None)


def _apply_widgets(sess: PlaygroundSession, prefix: str) -> None:
    state = st.session_state
    values = {name: state.get(_key(prefix, name), getattr(sess.settings, name)) for name in settings_fields()}
    if not st.session_state.get(_key(prefix, "limit_capacity"), False):
        values["capacity_factor"] = None
    elif values["capacity_factor"] is not None:
        state[f"{prefix}__last_capacity"] = values["capacity_factor"]
    new, notes = PlaygroundSettings.coerce(values)
    for note in notes:
        note_once(note)
    if new != sess.settings:
        try:
            for notice in sess.apply(new):
                note_once(notice)
        except ValueError as err:  # validated again by the trainer; state is left as it was
            note_once(f"That change was refused: {err}")
    st.session_state[f"{prefix}__synced"] = sess.settings


def render_speed(sess: PlaygroundSession, prefix: str = "ctl") -> None:
    key = _key(prefix, "steps_per_tick")
    st.session_state.setdefault(key, sess.settings.steps_per_tick)
    st.slider("Speed (steps per tick)", 1, 200, key=key, help=CONTROL_BY_FIELD["steps_per_tick"].help)
    if st.session_state[key] != sess.settings.steps_per_tick:
        sess.apply(PlaygroundSettings(**{**vars(sess.settings), "steps_per_tick": st.session_state[key]}))
