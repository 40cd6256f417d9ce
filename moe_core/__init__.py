"""moe_core: Mixture-of-Experts layers, routers, metrics and training for the MoE Playground.

    from moe_core import MoEConfig, MoELayer
    layer = MoELayer(MoEConfig(d_model=64, n_experts=8, top_k=2, capacity_factor=1.25))
    y, info = layer(x)          # info.expert_index, info.router_probs, info.dropped, info.losses, ...

No Streamlit anywhere in this package: the app observes it, never the other way round.
"""

from moe_core.layer import CAUSAL_ROUTERS, OVERFLOW_POLICIES, ROUTERS, MoEConfig, MoELayer, RoutingInfo, expert_capacity
from moe_core.layer.config import LIVE_FIELDS

__all__ = [
    "CAUSAL_ROUTERS",
    "LIVE_FIELDS",
    "OVERFLOW_POLICIES",
    "ROUTERS",
    "MoEConfig",
    "MoELayer",
    "RoutingInfo",
    "expert_capacity",
]
__version__ = "0.1.0"
