"""The routers of the literature, one file each. build_router(config) picks one by config.router."""

from __future__ import annotations

from torch import nn

from moe_core.config import MoEConfig
from moe_core.routers.base import RouterOutput
from moe_core.routers.dense import DenseRouter
from moe_core.routers.expert_choice import ExpertChoiceRouter
from moe_core.routers.gshard import GShardTop2Router
from moe_core.routers.hash import HashRouter
from moe_core.routers.noisy_topk import NoisyTopKRouter
from moe_core.routers.sigmoid_bias import SigmoidBiasRouter
from moe_core.routers.soft import SoftRouter
from moe_core.routers.softmax_topk import SoftmaxTopKRouter
from moe_core.routers.switch import SwitchRouter

ROUTER_CLASSES: dict[str, type[nn.Module]] = {
    "softmax_topk": SoftmaxTopKRouter,
    "gshard_top2": GShardTop2Router,
    "noisy_topk": NoisyTopKRouter,
    "switch": SwitchRouter,
    "expert_choice": ExpertChoiceRouter,
    "hash": HashRouter,
    "soft": SoftRouter,
    "sigmoid_bias": SigmoidBiasRouter,
    "dense": DenseRouter,
}


def build_router(config: MoEConfig) -> nn.Module:
    return ROUTER_CLASSES[config.router](config)


__all__ = ["ROUTER_CLASSES", "RouterOutput", "build_router", *[c.__name__ for c in ROUTER_CLASSES.values()]]
