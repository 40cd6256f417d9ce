"""A small classroom in CI: 3 sessions training at once on one server with the shipped configuration.

One session is a real chromium page, two are wire students (Streamlit's protocol without a browser): three
ticking chromium tabs would need more than the two cores CI has, and then measure the browsers, not the server
(see benchmarks/README.md, "Classroom load"). The measuring code is benchmarks/bench_classroom.py's.
~20 s of measurement, asserting that every session keeps ticking (>= 0.5 ticks/s, no stall over 5 s) and that a
control change shows up within 1.5 s at the 95th percentile, in the browser and on the wire. The numbers go to
test-artifacts/classroom.json. Runtime ~45 s on 2 cores.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_classroom as bench  # noqa: E402

pytestmark = pytest.mark.slow

SESSIONS = 3
BROWSERS = 1
SECONDS = 20.0


def test_three_students_keep_ticking_and_controls_answer(playwright, artifacts):
    port = bench.free_port()
    proc = bench.start_app(port, log_path=artifacts / "streamlit-classroom.log")
    browser = playwright.chromium.launch(executable_path=bench.CHROMIUM, args=bench.BENCH_CHROMIUM_ARGS)
    result: dict = {}
    try:
        result = bench.measure_classroom(browser, f"http://127.0.0.1:{port}", bench.server_pid(proc.pid),
                                         SESSIONS, SECONDS, warmup=3.0, probe_every=2.0, probe_timeout=5.0,
                                         n_browsers=BROWSERS, log=lambda _msg: None)
    finally:
        bench.close_students(result)
        browser.close()
        bench.stop_app(proc)
    (artifacts / "classroom.json").write_text(json.dumps(result, indent=1, default=str))
    table = bench.markdown_table([result])
    for s in result["per_session"]:
        assert s["ticks_per_s"] >= bench.TARGET_TICKS_PER_S, f"session {s['session']} fell behind:\n{table}"
        assert s["max_stall_s"] <= 5.0, f"session {s['session']} stalled:\n{table}"
        assert not [e for e in s["errors"] if not e.startswith("timeout")], s["errors"]
    assert result["browsers"] == BROWSERS and result["browser_probes"] >= 5, f"too few browser probes:\n{table}"
    assert result["probes"] >= SESSIONS * 5, f"too few control probes landed:\n{table}"
    # A key press that lands exactly while Streamlit replaces the slider's DOM node is lost (seen in ~1 of 40
    # browser probes); one such miss is tolerated, it still counts as +inf in the percentiles below.
    assert result["timeouts"] <= 1, f"control changes never reached the page:\n{table}"
    assert result["browser_latency_p95_s"] <= bench.TARGET_P95_S, f"controls answer too slowly:\n{table}"
    assert result["latency_p95_s"] <= bench.TARGET_P95_S, f"controls answer too slowly:\n{table}"
