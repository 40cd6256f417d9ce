"""Browser cost of one training tab: Chromium's CPU and the page's updates per second, beside measured floors.

    .venv/bin/python benchmarks/bench_browser.py                       # 30 s windows, every case
    .venv/bin/python benchmarks/bench_browser.py --seconds 10 --cases app charts --out runs/browser.json

Each case gets its own Streamlit server (started from the repository root, so the shipped .streamlit/config.toml
applies) and its own headless Debian chromium, started here with a DevTools port so that its process tree is
known; Playwright drives it over CDP. One window of --seconds after --warmup seconds of the page running.

Cases:
- app: the default Playground with Play pressed (the learner's training tab).
- fragment: floor, a bare page whose fragment reruns every TICK_SECONDS and writes one number.
- charts: floor, the same fragment redrawing 4 small Plotly line charts (200 points each) every tick.
- heatmap: floor, as charts with one of the four a 48 x 48 heatmap.

Measures, over the window:
- browser CPU: utime + stime of every process of that chromium (browser, renderers, utility processes), in % of
  ONE core (/proc; processes that exit inside the window count through their parent's cutime/cstime).
- updates/s: script or fragment runs the page received in the window (Streamlit's script_finished message on the
  page's WebSocket, read from the CDP event stream), per second.
The floors are measured in the same run as the app: compare ratios, not absolute percentages across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "app"))  # TICK_SECONDS, the app's own interval, for the floor pages
sys.path.insert(0, str(ROOT / "benchmarks"))
import e2e_helpers  # noqa: E402
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


_h = e2e_helpers.load()
start_app, stop_app, free_port = _h.start_app, _h.stop_app, _h.free_port
CHROMIUM, CHROMIUM_ARGS = _h.CHROMIUM, _h.CHROMIUM_ARGS

FLOOR_PAGE = '''
"""Floor page for benchmarks/bench_browser.py (written by it into a temporary folder)."""
import numpy as np
import plotly.graph_objects as go
import streamlit as st

CHARTS = {charts}
HEATMAP = {heatmap}
st.session_state.setdefault("n", 0)


@st.fragment(run_every={tick})
def tick():
    st.session_state["n"] += 1
    n = st.session_state["n"]
    st.metric("Tick", n)
    cols = st.columns(2)
    rng = np.random.default_rng(n)
    for i in range(CHARTS):
        if HEATMAP and i == 0:
            fig = go.Figure(go.Heatmap(z=rng.random((48, 48))))
        else:
            fig = go.Figure(go.Scatter(y=np.cumsum(rng.standard_normal(200)), mode="lines"))
        fig.update_layout(height=260, margin=dict(l=30, r=10, t=30, b=30), title=f"chart {{i}}")
        cols[i % 2].plotly_chart(fig, key=f"c{{i}}")


tick()
'''
FLOORS = {"fragment": (0, False), "charts": (4, False), "heatmap": (4, True)}
CASES = ("app", *FLOORS)


def start_chromium(profile: Path) -> tuple[subprocess.Popen, str]:
    """A headless chromium with a DevTools port; returns it and the CDP endpoint."""
    cmd = [CHROMIUM, "--headless=new", "--remote-debugging-port=0", f"--user-data-dir={profile}",
           "--window-size=1400,1000", *CHROMIUM_ARGS, "about:blank"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stderr.readline().decode(errors="replace")
        match = re.search(r"DevTools listening on (ws://\S+)", line)
        if match:
            return proc, match.group(1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("chromium did not report its DevTools endpoint")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) of `root` and every live descendant, plus what exited children spent."""
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
            stats[int(entry.name)] = fields
    members, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in members:
                members.add(child)
                frontier.append(child)
    ticks = 0
    for pid in members & stats.keys():
        f = stats[pid]  # after the ')': state ppid ... utime(11) stime(12) cutime(13) cstime(14)
        ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return ticks / CLK_TCK


def measure(case: str, seconds: float, warmup: float, workdir: Path) -> dict:
    from moe_ui.live import TICK_SECONDS
    from playwright.sync_api import sync_playwright

    if case == "app":
        script = "app/streamlit_app.py"
    else:
        charts, heatmap = FLOORS[case]
        script = str(workdir / f"floor_{case}.py")
        Path(script).write_text(FLOOR_PAGE.format(charts=charts, heatmap=heatmap, tick=TICK_SECONDS))
    port = free_port()
    server = start_app(port, log_path=workdir / f"streamlit_{case}.log", script=script)
    browser_proc, endpoint = start_chromium(workdir / f"profile_{case}")
    finished: list[float] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.connect_over_cdp(endpoint)
            context = browser.contexts[0] if browser.contexts else browser.new_context()
            page = context.pages[0] if context.pages else context.new_page()
            page.set_viewport_size({"width": 1400, "height": 1000})

            def on_socket(ws) -> None:
                ws.on("framereceived", lambda payload: _on_frame(payload, finished))

            page.on("websocket", on_socket)
            page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded")
            if case == "app":
                # a first start on a fresh machine builds the C kernels before the page shows
                page.get_by_role("button", name="Play", exact=True).click(timeout=180_000)
            else:
                page.get_by_text("Tick").first.wait_for(timeout=60_000)
            _pump(page, warmup)
            cpu0, t0, n0 = tree_cpu_seconds(browser_proc.pid), time.monotonic(), len(finished)
            _pump(page, seconds)
            cpu1, t1, n1 = tree_cpu_seconds(browser_proc.pid), time.monotonic(), len(finished)
            browser.close()
    finally:
        browser_proc.kill()
        browser_proc.wait()
        stop_app(server)
    elapsed = t1 - t0
    log = (workdir / f"streamlit_{case}.log").read_text(errors="replace")
    return {"case": case, "server_tracebacks": log.count("Traceback (most recent call last)"),
            "seconds": round(elapsed, 2), "browser_cpu_pct": round(100 * (cpu1 - cpu0) / elapsed, 1),
            "updates_per_s": round((n1 - n0) / elapsed, 2)}


def _pump(page, seconds: float) -> None:
    """Let the page run while Playwright delivers its events (a plain sleep would hold them back)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        page.wait_for_timeout(min(250, max(1, 1000 * (end - time.monotonic()))))


def _on_frame(payload: bytes | str, finished: list[float]) -> None:
    if isinstance(payload, str):
        return
    msg = ForwardMsg()
    with contextlib.suppress(Exception):
        msg.ParseFromString(payload)
        if msg.WhichOneof("type") == "script_finished":
            finished.append(time.monotonic())


def run(cases: list[str], seconds: float, warmup: float) -> list[dict]:
    if CHROMIUM is None:
        raise SystemExit("Debian's chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="bench_browser_") as tmp:
        results = [measure(case, seconds, warmup, Path(tmp)) for case in cases]
        if os.environ.get("MOE_BENCH_KEEP_LOGS"):
            for log in Path(tmp).glob("*.log"):
                shutil.copy(log, ROOT / log.name)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement window per case")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds the page runs before the window")
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = parser.parse_args()
    load = os.getloadavg()
    results = run(args.cases, args.seconds, args.warmup)
    print(f"chromium: {subprocess.run([CHROMIUM, '--version'], capture_output=True, text=True).stdout.strip()}; "
          f"load average before: {load[0]:.2f}; window {args.seconds:g} s after {args.warmup:g} s\n")
    print("| case | browser CPU (% of one core) | updates/s |\n|---|---|---|")
    for r in results:
        print(f"| {r['case']} | {r['browser_cpu_pct']} | {r['updates_per_s']} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
