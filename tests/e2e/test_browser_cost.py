"""A small benchmarks/bench_browser.py in CI: the training Playground's browser CPU, as a ratio to the 4-chart
floor measured in the same run, must not double against the recorded baseline (timings live in benchmarks/;
only a ratio is checked here), and the page must keep updating at least half as often as the floor."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_playground_costs_the_browser_no_more_than_twice_its_recorded_ratio(tmp_path):
    baseline = json.loads((ROOT / "benchmarks" / "browser_baseline.json").read_text())["app_over_charts_floor"]
    out = tmp_path / "browser.json"
    # its own process: Playwright's sync API cannot start inside the pytest-playwright loop of the other tests
    subprocess.run([sys.executable, "benchmarks/bench_browser.py", "--cases", "app", "charts", "--seconds", "10",
                    "--warmup", "3", "--out", str(out)], cwd=ROOT, check=True, timeout=600)
    app, floor = json.loads(out.read_text())
    ratio = app["browser_cpu_pct"] / max(floor["browser_cpu_pct"], 1.0)
    summary = f"app {app}, charts floor {floor}: ratio {ratio:.2f}, recorded {baseline:.2f}"
    print(summary)
    assert app["server_tracebacks"] == floor["server_tracebacks"] == 0, "a server logged a traceback: " + summary
    assert ratio <= 2 * baseline, "the Playground's browser cost more than doubled: " + summary
    assert app["updates_per_s"] >= 0.5 * floor["updates_per_s"], "the Playground updates too rarely: " + summary
