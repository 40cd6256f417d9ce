"""The MoE layer: config, routers, capacity, experts, metrics, and the slow per-token reference.

    MoELayer (moe_layer.py): router -> top-k -> capacity -> gather -> experts -> weighted scatter, in plain torch.
"""

from moe_core.layer.capacity import expert_capacity
from moe_core.layer.config import CAUSAL_ROUTERS, OVERFLOW_POLICIES, ROUTERS, MoEConfig
from moe_core.layer.moe_layer import MoELayer, RoutingInfo

__all__ = ["CAUSAL_ROUTERS", "OVERFLOW_POLICIES", "ROUTERS", "MoEConfig", "MoELayer", "RoutingInfo", "expert_capacity"]
