"""Shared validation for the config dataclasses: every bad value raises a ValueError that names the field,
the value and the allowed range, and every config round-trips through a plain dict (URLs, JSON, files)."""

from __future__ import annotations

import math
from dataclasses import asdict, fields
from typing import Any

import numpy as np


def fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{name}={value!r} is out of range: allowed {allowed}")


def check_int(cfg: Any, name: str, low: int, high: int, context: str = "") -> None:
    """An integer in [low, high]; an integral float (8.0 from JSON or a URL) is accepted as 8."""
    v = getattr(cfg, name)
    allowed = f"an integer from {low} to {high}{context}"
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not low <= v <= high:
        fail(name, getattr(cfg, name), allowed)
    object.__setattr__(cfg, name, int(v))


def check_float(cfg: Any, name: str, low: float, high: float, low_open: bool = False, extra: str = "") -> None:
    """A finite number in [low, high] (or (low, high] with low_open)."""
    v = getattr(cfg, name)
    allowed = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]" + (f", {extra}" if extra else "")
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v):
        fail(name, v, allowed)
    if v < low or v > high or (low_open and v == low):
        fail(name, v, allowed)
    object.__setattr__(cfg, name, float(v))


def check_choice(cfg: Any, name: str, choices) -> None:
    v = getattr(cfg, name)
    if v not in choices:
        fail(name, v, "one of " + ", ".join(choices))


def check_bool(cfg: Any, name: str) -> None:
    v = getattr(cfg, name)
    if not isinstance(v, bool):
        fail(name, v, "true or false")


class DictRoundTrip:
    """to_dict / from_dict / replace for a frozen dataclass; unknown keys are an error, missing keys take
    the defaults, and replace() validates like a new config."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        if not isinstance(data, dict):
            raise ValueError(f"config must be a dict of field values, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; allowed fields are {sorted(known)}")
        return cls(**data)

    def replace(self, **changes: Any):
        return type(self).from_dict({**self.to_dict(), **changes})
