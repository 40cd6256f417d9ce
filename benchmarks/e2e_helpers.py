"""The browser tests' helpers (tests/e2e/conftest.py: start_app, stop_app, free_port, CHROMIUM, CHROMIUM_ARGS),
loaded once for the benchmarks that drive a real server and browser: one source for how the app is started."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load():
    name = "_moe_e2e_helpers"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "e2e" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
