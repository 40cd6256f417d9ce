"""Lay out the views of one snapshot. Every figure comes from a pure builder in moe_core.figures."""

from __future__ import annotations

import json
from collections.abc import Callable

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from moe_core import figures
from moe_core.figures.common import message_figure
from moe_core.training.snapshot import Snapshot
from moe_core.views import VIEW_TITLES

VIEWS = VIEW_TITLES
DEFAULT_VIEWS = ["routing_map", "language", "load", "buffers", "curves"]  # the first two: 2-D or language
BATCH_VIEWS = ("load", "buffers", "scaling")  # drawn from the last training batch
HISTORY_VIEWS = ("curves",)  # drawn from the training history; the others from the snapshot alone
GRID_VIEWS = ("routing_map",)  # drawn from the routing map's grid, which a training tick's snapshot may leave out
DEFAULT_CURVES = ["task_loss", "max_vio", "dropped_frac"]
PLOTLY_CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


def available_views(snap: Snapshot) -> list[str]:
    views = list(VIEWS)
    if snap.task == "language":
        views.remove("routing_map")
    else:
        views.remove("language")
    return views


def chart(fig: go.Figure, key: str) -> None:
    from moe_ui.state import presenter_mode

    if presenter_mode():  # ?present=1 enlarges the page's text: the charts' text follows
        fig = figures.presenter_fonts(fig)
    st.plotly_chart(fig, key=key, config=PLOTLY_CONFIG, width="stretch", theme=None)


def builders(snap: Snapshot, history: pd.DataFrame, layer: int = 0,
             options: dict | None = None) -> dict[str, Callable[[], go.Figure]]:
    """One zero-argument figure builder per view (nothing is built until called)."""
    o = options or {}
    if not snap.batch_tokens:  # step 0: these views draw the last training batch, and there is none yet
        waiting = lambda name: lambda: message_figure(  # noqa: E731
            VIEWS[name], "No training batch yet: press Step or Play to route one.")
        return {**_builders(snap, history, layer, o), **{name: waiting(name) for name in BATCH_VIEWS}}
    return _builders(snap, history, layer, o)


def _builders(snap: Snapshot, history: pd.DataFrame, layer: int, o: dict) -> dict[str, Callable[[], go.Figure]]:
    return {
        "routing_map": lambda: figures.routing_map(snap, layer=layer, mode=o.get("map_mode", "top1")),
        "load": lambda: figures.expert_load(snap, layer=layer),
        "buffers": lambda: figures.capacity_buffers(snap, layer=layer),
        "probabilities": lambda: figures.router_probabilities(snap, layer=layer),
        "curves": lambda: figures.training_curves(history, o.get("curves", DEFAULT_CURVES),
                                                  log_y=o.get("log_y", False)),
        "specialization": lambda: figures.specialization(snap, layer=layer),
        "cost": lambda: figures.sparsity_cost(snap),
        "language": lambda: figures.top_tokens_figure(snap, layer=layer),
        "scaling": lambda: figures.scaling_out(snap),
        "memory": figures.model_memory,  # published configs: the same whatever the playground trains
    }


def render_view(name: str, snap: Snapshot, history: pd.DataFrame, key: str, layer: int = 0,
                options: dict | None = None) -> None:
    layer = min(layer, max(0, len(snap.layers) - 1))
    if not snap.layers and name not in ("curves", "cost", "memory"):
        st.info("The dense twin has no router: nothing to show here.")
        return
    if name == "language":
        where = f"layer {layer + 1}, " if len(snap.layers) > 1 else ""
        st.markdown(f"**Characters by expert** ({where}step {snap.step:,})  \n"
                    "Each character of the probe text is coloured by its top-1 expert (hover for the expert and "
                    "the domain); the table below lists each expert's most frequent characters.")
        st.markdown(figures.probe_text_html(snap, layer=layer), unsafe_allow_html=True)
    chart(builders(snap, history, layer, options)[name](), key)
    if name == "specialization" and snap.top_k >= 2 and snap.router not in ("dense", "soft", "expert_choice"):
        chart(figures.co_activation(snap, layer=layer), key + "_coact")


def render_views(snap: Snapshot, history: pd.DataFrame, views: list[str], key_prefix: str, layer: int = 0,
                 options: dict | None = None, columns: int = 2) -> None:
    shown = [v for v in views if v in available_views(snap)]
    for row_start in range(0, len(shown), columns):
        cols = st.columns(columns)
        for col, name in zip(cols, shown[row_start : row_start + columns], strict=False):
            with col:
                render_view(name, snap, history, key=f"{key_prefix}_{name}", layer=layer, options=options)


def downloads(snap: Snapshot, history: pd.DataFrame, config: Callable[[], dict], key_prefix: str) -> None:
    """Metrics CSV, config JSON and a figure as a self-contained HTML page, built only when clicked (the config
    then: Speed may have moved since this was drawn, in a fragment of its own)."""
    cols = st.columns(3, vertical_alignment="bottom")
    cols[0].download_button("Metrics (CSV)", lambda: history.to_csv(index=False).encode(), "moe_metrics.csv",
                            "text/csv", key=f"{key_prefix}_dl_csv", icon=":material/table:", on_click="ignore")
    cols[1].download_button("Config (JSON)", lambda: json.dumps(config(), indent=2).encode(), "moe_config.json",
                            "application/json", key=f"{key_prefix}_dl_json", icon=":material/settings:",
                            on_click="ignore")
    make = builders(snap, history)
    names = available_views(snap) if snap.layers else ["curves", "cost"]
    name = cols[2].selectbox("Figure to download", names, format_func=VIEWS.get, key=f"{key_prefix}_dl_pick")
    if name:
        cols[2].download_button("Figure (HTML)", lambda: make[name]().to_html(include_plotlyjs=True).encode(),
                                f"moe_{name}.html", "text/html", key=f"{key_prefix}_dl_fig",
                                icon=":material/image:", on_click="ignore")
    st.caption("PNG: use the camera icon at the top right of any chart.")
