"""Pure Plotly figure builders for the playground's views: Snapshot / LayerView / history DataFrame in,
plotly.graph_objects.Figure (or HTML) out. No Streamlit, no Trainer, no torch tensors.

    from moe_core.figures import routing_map, expert_load
    fig = routing_map(trainer.snapshot(), layer=0, mode="top1")

Every expert has one colour on every page (palette.expert_colors). Builders assemble plain dicts and skip
plotly.py's slow per-property validation (common.make_figure); the tests validate each figure instead.
"""

from moe_core.figures.capacity_buffers import capacity_buffers
from moe_core.figures.cost import sparsity_cost
from moe_core.figures.curves import METRIC_LABELS, training_curves
from moe_core.figures.language import expert_legend_html, probe_text_html, top_tokens_figure
from moe_core.figures.load import expert_load
from moe_core.figures.model_memory import model_memory
from moe_core.figures.palette import base_layout, expert_colors, expert_name, presenter_fonts, with_alpha
from moe_core.figures.probabilities import router_probabilities
from moe_core.figures.routing_map import MODES, routing_map
from moe_core.figures.scaling import scaling_out
from moe_core.figures.specialization import co_activation, specialization

__all__ = [
    "METRIC_LABELS",
    "MODES",
    "base_layout",
    "capacity_buffers",
    "co_activation",
    "expert_colors",
    "expert_legend_html",
    "expert_load",
    "expert_name",
    "model_memory",
    "presenter_fonts",
    "probe_text_html",
    "router_probabilities",
    "routing_map",
    "scaling_out",
    "sparsity_cost",
    "specialization",
    "top_tokens_figure",
    "training_curves",
    "with_alpha",
]
