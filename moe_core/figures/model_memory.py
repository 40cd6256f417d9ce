"""Memory vs compute of real MoE models: the parameters every expert keeps in memory against those one token uses.

Built from moe_core.real_models.model_memory (published configs, no training run), so the figure is the same on
every page.
"""

from __future__ import annotations

import plotly.graph_objects as go

from moe_core.figures.common import make_figure
from moe_core.figures.cost import DENSE_COLOR, MOE_COLOR
from moe_core.figures.palette import join_parts, layout_dict
from moe_core.real_models.model_memory import BYTES_PER_PARAM, MODELS, ModelSpec, memory_table

HEIGHT = 420


def _gb(value: float) -> str:
    """93.4 GB, 1,342 GB (not 1.34e+03)."""
    return f"{value:,.0f} GB" if value >= 100 else f"{value:.3g} GB"


def model_memory(specs: tuple[ModelSpec, ...] = MODELS, dtype: str = "bfloat16") -> go.Figure:
    """Grouped bars per model, on a log axis: total parameters (all in memory) and active parameters (run per
    token), each labelled with its count and the gigabytes its weights take in `dtype`."""
    rows = memory_table(specs, dtype)
    names = [f"{r['model']}<br>{r['experts']}" for r in rows]
    data = []
    for key, gb_key, label, color in (("total_b", "weights_gb", "in memory (total)", DENSE_COLOR),
                                      ("active_b", "active_gb", "run per token (active)", MOE_COLOR)):
        values = [r[key] for r in rows]
        text = [f"{v:.3g}B<br>{_gb(r[gb_key])}" for v, r in zip(values, rows, strict=True)]
        data.append(dict(type="bar", name=label, x=names, y=values, marker=dict(color=color), text=text,
                         textposition="outside", cliponaxis=False,
                         hovertemplate="%{x}<br>" + label + ": %{y:.3g}B parameters<extra></extra>"))
    shares = ", ".join(f"{r['model'].split()[0]} {100 * r['active_share']:.0f} %" for r in rows)
    sub = join_parts(f"weights only, {dtype} ({BYTES_PER_PARAM[dtype]:g} bytes per parameter)",
                     f"active share: {shares}")
    layout = layout_dict("Every expert in memory, a few per token", HEIGHT, sub)
    layout.update(barmode="group", showlegend=True,
                  legend=dict(orientation="h", x=0.0, y=-0.22, xanchor="left", yanchor="top"))
    layout["yaxis"] = dict(type="log", title=dict(text="parameters (billions, log scale)"), automargin=True, dtick=1,
                           range=[-0.3, 3.7])  # 0.5B to 5000B: room for the labels above the tallest bar
    layout["xaxis"] = dict(tickangle=0, automargin=True)
    return make_figure(data, layout)
