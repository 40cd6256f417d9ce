"""A small benchmarks/bench_browser.py in CI: the training Playground's browser CPU, as a ratio to the 4-chart
floor measured in the same run, must not double against the recorded baseline (timings live in benchmarks/;
only a ratio is checked here), and the page must keep updating at least half as often as the floor."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_browser", ROOT / "benchmarks" / "bench_browser.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_browser"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_playground_costs_the_browser_no_more_than_twice_its_recorded_ratio():
    baseline = json.loads((ROOT / "benchmarks" / "browser_baseline.json").read_text())["app_over_charts_floor"]
    app, floor = _bench().run(["app", "charts"], seconds=10, warmup=3)
    ratio = app["browser_cpu_pct"] / max(floor["browser_cpu_pct"], 1.0)
    summary = f"app {app}, charts floor {floor}: ratio {ratio:.2f}, recorded {baseline:.2f}"
    print(summary)
    assert app["server_tracebacks"] == floor["server_tracebacks"] == 0, "a server logged a traceback: " + summary
    assert ratio <= 2 * baseline, "the Playground's browser cost more than doubled: " + summary
    assert app["updates_per_s"] >= 0.5 * floor["updates_per_s"], "the Playground updates too rarely: " + summary
