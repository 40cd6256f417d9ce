"""Tiny random checkpoints of every supported family, built once per test session, offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from moe_core.real_models import FAMILIES, Policy
from moe_core.real_models.tiny import build_tiny


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_moe")
    return {mt: build_tiny(mt, root / mt, seed=1) for mt in FAMILIES}


@pytest.fixture(scope="session")
def tiny_policy(tiny_models: dict[str, Path]) -> Policy:
    return Policy(allowed=tuple(str(p) for p in tiny_models.values()), max_chars=2000)
