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

from moe_core.layer.config import BF16_ROUTERS, CAUSAL_ROUTERS, FORCED_TOP_K, ROUTER_CATALOGUE, ROUTER_INFO, ROUTERS
from moe_core.training.datasets import DATASETS, CSVError, parse_points_csv
from moe_core.training.session import PlaygroundSession
from moe_core.training.settings import (
    CONTROL_BY_FIELD,
    PlaygroundSettings,
    min_experts_note,
    non_causal_note,
    settings_fields,
)
from moe_ui.state import note_once, once_per_click

ROUTER_LABELS = {r.name: r.label for r in ROUTER_CATALOGUE}  # the catalogue's labels (Reference page too)


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


def _with(options: tuple, value: Any) -> list:
    return sorted(set(options) | ({value} if value is not None else set()))


def _label(field: str) -> str:
    return CONTROL_BY_FIELD[field].label


def _slider(field: str, low: float | None = None, high: float | None = None, label: str | None = None,
            **kwargs: Any) -> Any:
    """A slider over the control's range (CONTROLS), narrowed where the data set or router asks."""
    c = CONTROL_BY_FIELD[field]
    low, high = c.low if low is None else low, c.high if high is None else high
    step = {} if c.step is None else {"step": c.step}
    return st.slider(label or c.label, low, high, **step, **kwargs)


def _marks(field: str, value: Any, **kwargs: Any) -> Any:
    """A select-slider over the control's marks, plus the current value when a URL set one between them."""
    c = CONTROL_BY_FIELD[field]
    fmt = {"format_func": lambda v: f"{v:g}"} if c.kind == "float" else {}
    return st.select_slider(c.label, _with(c.marks, value), **fmt, **kwargs)


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
    control("dataset", lambda: st.selectbox(_label("dataset"), list(DATASETS), **kw("dataset")))
    info = DATASETS[state[_key(prefix, "dataset")]]
    if show("dataset"):
        st.caption(info.description)
    if info.task != "language":
        control("noise", lambda: _slider("noise", **kw("noise")))
        if info.n_classes_range is not None:
            lo, hi = info.n_classes_range
            hi = min(hi, int(CONTROL_BY_FIELD["n_classes"].high))
            state[_key(prefix, "n_classes")] = min(max(state[_key(prefix, "n_classes")], lo), hi)
            label = "Arms" if info.name == "spirals" else "Classes"
            control("n_classes", lambda: _slider("n_classes", lo, hi, label=label, **kw("n_classes")))

    def seed_row() -> None:
        cols = st.columns(2, vertical_alignment="bottom")
        seed = CONTROL_BY_FIELD["seed"]
        cols[0].number_input(seed.label, int(seed.low), int(seed.high), step=1, **kw("seed"))
        cols[1].button("New data", key=f"{prefix}__regen", on_click=_bump_seed, args=(prefix,), width="stretch",
                       disabled=kw("seed")["disabled"], help="Draw a fresh data set and start again (seed + 1).")

    control("seed", seed_row)
    if allow_upload and info.task != "language" and "upload" not in hidden:
        _csv_upload(sess, prefix)

    # ---- routing -------------------------------------------------------------------------------------
    st.subheader("Routing", divider="gray")
    allowed = CAUSAL_ROUTERS if info.task == "language" else ROUTERS
    if state[_key(prefix, "router")] not in allowed:
        note_once(non_causal_note(state[_key(prefix, "router")]))
        state[_key(prefix, "router")] = PlaygroundSettings().router
    control("router", lambda: st.selectbox(_label("router"), list(allowed), format_func=ROUTER_LABELS.get,
                                                 **kw("router")))
    if info.task == "language" and show("router"):
        not_offered = " and ".join(r.short for r in ROUTER_CATALOGUE if not r.causal)
        st.caption(f"{not_offered[0].upper()}{not_offered[1:]} are not offered here: they decide over the whole "
                   "batch, so a token's route would depend on later characters (lesson 7).")
    router = state[_key(prefix, "router")]
    info_r = ROUTER_INFO[router]
    if state[_key(prefix, "n_experts")] < info_r.min_experts:  # GShard picks two different experts per token
        state[_key(prefix, "n_experts")] = info_r.min_experts
        note_once(min_experts_note(info_r))
    control("n_experts", lambda: _slider("n_experts", info_r.min_experts, **kw("n_experts")))
    n_experts = state[_key(prefix, "n_experts")]
    k_key = _key(prefix, "top_k")
    _keep_k_across_forced(prefix, router, n_experts)
    state[k_key] = min(max(1, state[k_key]), n_experts)
    if n_experts == 1 or info_r.forced_top_k is not None or info_r.every_expert:
        why = info_r.k_caption or "there is only one expert"
        if show("top_k"):
            k_shown = f"all {n_experts}" if info_r.every_expert and n_experts > 1 else state[k_key]
            st.caption(f"{_label('top_k')}: {k_shown} ({why})")
    else:
        control("top_k", lambda: _slider("top_k", 1, n_experts, **kw("top_k")))

    def capacity() -> None:
        limit = st.toggle("Limit expert capacity", key=_key(prefix, "limit_capacity"),
                          disabled=kw("capacity_factor")["disabled"],
                          help="Off = dropless: every token reaches its experts however unbalanced.")
        if limit:
            _slider("capacity_factor", **kw("capacity_factor"))

    control("capacity_factor", capacity)
    if state[_key(prefix, "limit_capacity")]:  # who keeps a slot matters only when slots can run out
        control("overflow_policy", lambda: st.radio(_label("overflow_policy"),
                                                    list(CONTROL_BY_FIELD["overflow_policy"].choices),
                                                    horizontal=True, **kw("overflow_policy")))

    # ---- balancing -----------------------------------------------------------------------------------
    st.subheader("Balancing", divider="gray")
    for field in ("aux_loss_coef", "z_loss_coef"):
        control(field, lambda f=field: _marks(f, state[_key(prefix, f)], **kw(f)))
    if router == "gshard_top2":  # the router reads neither: its randomness is the draw of the 2nd expert
        if show("router_noise") or show("normalize_topk"):
            st.caption("GShard's router always renormalizes its two gates and adds no noise: its randomness is "
                       "the draw that keeps the 2nd expert.")
    else:
        control("router_noise", lambda: _slider("router_noise", **kw("router_noise")))
    if router == "sigmoid_bias":
        control("bias_update_rate", lambda: _marks("bias_update_rate", state[_key(prefix, "bias_update_rate")],
                                                   **kw("bias_update_rate")))
    if router != "gshard_top2":
        control("normalize_topk", lambda: st.toggle(_label("normalize_topk"), **kw("normalize_topk")))
    if router in BF16_ROUTERS:  # the others compute their router in float32 only (moe_core.layer.config)
        control("router_dtype", lambda: st.radio(_label("router_dtype"),
                                                 list(CONTROL_BY_FIELD["router_dtype"].choices), horizontal=True,
                                                 **kw("router_dtype")))

    # ---- model and training ---------------------------------------------------------------------------
    st.subheader("Model and training", divider="gray")
    control("n_shared_experts", lambda: _slider("n_shared_experts", **kw("n_shared_experts")))
    control("expert_hidden", lambda: _marks("expert_hidden", state[_key(prefix, "expert_hidden")],
                                            **kw("expert_hidden")))
    control("n_layers", lambda: _slider("n_layers", **kw("n_layers")))
    control("lr", lambda: _marks("lr", state[_key(prefix, "lr")], **kw("lr")))
    control("batch_size", lambda: _marks("batch_size", state[_key(prefix, "batch_size")], **kw("batch_size")))

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
            note_once(f"Top-k is back to {k}: the {ROUTER_INFO[by].short} router had set it to {forced}.")


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
    _slider("steps_per_tick", key=key, help=CONTROL_BY_FIELD["steps_per_tick"].help)
    if st.session_state[key] != sess.settings.steps_per_tick:
        synced = st.session_state.get(f"{prefix}__synced") == sess.settings
        sess.apply(PlaygroundSettings(**{**vars(sess.settings), "steps_per_tick": st.session_state[key]}))
        if synced:  # a change of this widget alone: the next full run must not write the old speed back over it
            st.session_state[f"{prefix}__synced"] = sess.settings
