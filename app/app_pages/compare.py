"""Compare: two configurations on the same data and seed, trained side by side, views aligned."""

import streamlit as st
from moe_ui import controls, live, state, views

from moe_core.session import PlaygroundSession
from moe_core.settings import CONTROLS, PlaygroundSettings

DATA_FIELDS = ("dataset", "noise", "n_classes", "seed")  # shared: B always uses A's data and seed

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
shared = {f: getattr(a.settings, f) for f in DATA_FIELDS}
if any(getattr(b.settings, f) != v for f, v in shared.items()):
    b.apply(PlaygroundSettings.coerce({**vars(b.settings), **shared})[0])
with right, st.expander("Configuration B", expanded=False, icon=":material/tune:"):
    other = set(vars(b.settings)) - set(DATA_FIELDS)
    controls.render_controls(b, prefix="cmpb", unlocked=other, allow_upload=False)
rebuilt = [s.trainer is not before for s, before in zip((a, b), trainers_before, strict=True)]
if rebuilt[0] != rebuilt[1]:  # one side starts again from step 0: so does the other, to compare equal steps
    changed, follower = ("A", b) if rebuilt[0] else ("B", a)
    running = follower.running
    follower.reset()
    follower.running = running
    state.note_once(f"{changed}'s change rebuilt its model, so {'B' if changed == 'A' else 'A'} starts again "
                    "too: both are compared at the same step.")
state.show_notes()

diff = [(c.label, getattr(a.settings, c.field), getattr(b.settings, c.field)) for c in CONTROLS
        if getattr(a.settings, c.field) != getattr(b.settings, c.field)]
if diff:
    st.markdown("**What differs:** " + "; ".join(f"{label}: A = `{va}`, B = `{vb}`" for label, va, vb in diff))
else:
    st.info("A and B are identical: change something in one of them.")


def both_running() -> bool:
    return a.running and b.running


@state.once_per_click
def set_running(run: bool) -> None:  # the state the button's label shows
    a.running = run and not a.trainer.diverged
    b.running = run and not b.trainer.diverged


@state.once_per_click
def step() -> None:
    for s in (a, b):
        s.running = False
        s.step_once()


@state.once_per_click
def reset() -> None:
    a.reset()
    b.reset()


cols = st.columns(3)
cols[0].button("Pause" if both_running() else "Play",
               icon=":material/pause:" if both_running() else ":material/play_arrow:", on_click=set_running,
               args=(not both_running(),), type="primary", key="cmp_play", width="stretch")
cols[1].button("Step", icon=":material/skip_next:", on_click=step, key="cmp_step", width="stretch")
cols[2].button("Reset both", icon=":material/restart_alt:", on_click=reset, key="cmp_reset", width="stretch")


@st.fragment(run_every=live.TICK_SECONDS if (a.running or b.running) else None)
def side_by_side() -> None:
    if a.running or b.running:  # the same number of steps for both, so the views stay aligned step for step
        lead, other = (a, b) if a.running else (b, a)
        done = lead.tick(budget_s=live.TRAIN_BUDGET_S / 2, only_if_running=True).steps
        if other.running:
            other.tick(budget_s=float("inf"), steps=done, only_if_running=True)
    sa, sb = a.latest, b.latest
    ha, hb = a.trainer.history, b.trainer.history
    names = [v for v in views.available_views(sa) if v in views.available_views(sb)]
    chosen = st.multiselect("Views", names, default=[v for v in ("load", "curves") if v in names],
                            format_func=views.VIEWS.get, key="cmp_views")
    m = st.columns(4)
    m[0].metric("Step (A / B)", f"{sa.step} / {sb.step}")
    same_step = sa.step == sb.step  # deltas only between equal steps (one side may have diverged and stopped)
    if not same_step:
        st.caption(":material/info: A and B are at different steps, so no differences are shown: press "
                   "**Reset both** to compare them step for step.")
    label = "Test MSE" if sa.task == "regression" else "Test accuracy"
    fmt = "{:.4f}" if sa.task == "regression" else "{:.1%}"

    def versus(col, name: str, va: float, vb: float, f: str, lower_is_better: bool) -> None:
        """'A / B' and B minus A; no arrow when they agree to the digits shown (or steps differ)."""
        delta = f.format(vb - va)
        same = f.format(vb) == f.format(va)
        col.metric(f"{name} (A / B)", f"{f.format(va)} / {f.format(vb)}",
                   delta=delta if same_step and not same else None,
                   delta_color="inverse" if lower_is_better else "normal", help="The change is B minus A.")

    versus(m[1], label, sa.test_quality, sb.test_quality, fmt, sa.task == "regression")
    for col, metric, name, f in ((m[2], "max_vio", "MaxVio", "{:.2f}"), (m[3], "dropped_frac", "Dropped", "{:.1%}")):
        if metric in ha.columns and metric in hb.columns and len(ha) and len(hb):
            versus(col, name, ha[metric].iloc[-1], hb[metric].iloc[-1], f, True)
    for name in chosen:
        ca, cb = st.columns(2)
        with ca:
            st.caption(f"A · {views.VIEWS[name]}")
            views.render_view(name, sa, ha, key=f"cmp_a_{name}")
        with cb:
            st.caption(f"B · {views.VIEWS[name]}")
            views.render_view(name, sb, hb, key=f"cmp_b_{name}")


side_by_side()
