"""Real models: read how a pretrained MoE language model routes (issue #16).

loading.py loads an allow-listed model once per process (memory estimate first, no remote code, offline-aware);
routing.py runs it with transformers' `output_router_logits=True` and records each layer's experts and gate
weights by the family's own rule (families.py). Needs `transformers`, imported only when a model is loaded.
"""

from moe_core.real_models.families import FAMILIES, Family, supported_names
from moe_core.real_models.loading import (
    LoadedModel,
    Policy,
    RefusedError,
    estimate_memory,
    load_model,
    loaded_models,
    read_policy,
)
from moe_core.real_models.routing import (
    LayerRouting,
    Routing,
    Specialisation,
    route_text,
    sample_texts,
    specialisation,
    summary,
)

__all__ = [
    "FAMILIES", "Family", "LayerRouting", "LoadedModel", "Policy", "RefusedError", "Routing", "Specialisation",
    "estimate_memory", "load_model", "loaded_models", "read_policy", "route_text", "sample_texts",
    "specialisation", "summary", "supported_names",
]
