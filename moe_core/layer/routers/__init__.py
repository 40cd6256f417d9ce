"""The routers of the literature, one file each. build_router(config) picks one by config.router."""

from __future__ import annotations

from moe_core.layer.config import MoEConfig
from moe_core.layer.routers.base import LinearRouter, Router, RouterOutput
from moe_core.layer.routers.dense import DenseRouter
from moe_core.layer.routers.expert_choice import ExpertChoiceRouter
from moe_core.layer.routers.gshard import GShardTop2Router
from moe_core.layer.routers.hash import HashRouter
from moe_core.layer.routers.noisy_topk import NoisyTopKRouter
from moe_core.layer.routers.sigmoid_bias import SigmoidBiasRouter
from moe_core.layer.routers.soft import SoftRouter
from moe_core.layer.routers.softmax_topk import SoftmaxTopKRouter
from moe_core.layer.routers.switch import SwitchRouter

ROUTER_CLASSES: dict[str, type[Router]] = {
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


def build_router(config: MoEConfig) -> Router:
    return ROUTER_CLASSES[config.router](config)


__all__ = ["ROUTER_CLASSES", "LinearRouter", "Router", "RouterOutput", "build_router",
           *[c.__name__ for c in ROUTER_CLASSES.values()]]
