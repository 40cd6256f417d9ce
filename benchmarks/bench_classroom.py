"""Classroom load: N sessions training at once on one server started with the SHIPPED configuration.

    .venv/bin/python benchmarks/bench_classroom.py --sessions 1 5 10 --browsers 1 --seconds 60 --probe-every 5 \
        --out runs/classroom.json               # 1 chromium page + N-1 wire students per N
    .venv/bin/python benchmarks/bench_classroom.py --sessions 1 5 10 --browsers 0 ...   # server capacity only
    .venv/bin/python benchmarks/bench_classroom.py --sessions 5 10 ...                  # N chromium pages each
    .venv/bin/python benchmarks/bench_classroom.py --sessions 3 --browsers 1 --soak-minutes 10 --release-rounds 1
    .venv/bin/python benchmarks/bench_classroom.py --sessions 10 --browsers 0 --seconds 30 --release-rounds 3

The server is `streamlit run app/streamlit_app.py` from the repository root (tests/e2e/conftest.py's
start_app), so .streamlit/config.toml applies and no test-only flag is added; a fresh server per N.

Two kinds of students, both pressing Play and then only doing what a student does:
- browser: a Debian chromium context (one browser, one context per student) that loads the Playground;
- wire (WireStudent): Streamlit's own WebSocket protocol without a browser, sending the same BackMsgs the
  frontend sends (first run, Play, the fragment's run_every rerun at the interval the server asks for, control
  changes). Why: a ticking Playground tab keeps ~0.5-1 core of chromium busy (React + four Plotly charts), so on a
  2-core machine ten real tabs measure the browsers, not the server. In a classroom each browser runs on its own
  laptop.

Definitions (browser numbers are timed inside the page with Date.now(), wire numbers when the message arrives):
- tick: a script or fragment run that trained, seen as a new value of the "Step" metric (polled every 25 ms in
  the page; every Step metric in the wire stream). ticks/s = such changes in the window / window length.
  steps/s = Step advance / window length (default speed 20 steps per tick; fewer when the tick's training budget
  runs out first: moe_core/training/session.py's fair share, at most the app's TRAIN_BUDGET_S).
- stall: the longest gap between two ticks of one session in the window.
- control-to-update latency: every --probe-every seconds each student moves "Speed (steps per tick)" to 21
  (ArrowRight) or back to 20 (ArrowLeft; the wire student sends the new widget value). It ends when the address
  bar shows the new value (`speed=21` / no `speed`): the server writes it in the rerun the change causes (the
  Speed fragment's, state.sync_url), so it is a round trip through the server while the session keeps ticking.
  Speed is a live change that redraws nothing else; a sidebar control's change runs the whole page
  (benchmarks/README.md). In a browser it includes the page's own work (handling the key, rendering the ticks
  queued before the answer); on the wire it is send -> receive. A probe with no update within --probe-timeout s
  counts as a timeout (+inf).
- server RSS: VmRSS of the streamlit process (/proc); CPU: utime+stime deltas of that process, in % of ONE core
  (200 % = both cores). client CPU = chromium + Playwright's driver + this script (the wire students); other =
  the rest of the machine (other people's jobs: the load average is printed too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import e2e_helpers  # noqa: E402

_h = e2e_helpers.load()
start_app, stop_app, free_port = _h.start_app, _h.stop_app, _h.free_port
CHROMIUM, CHROMIUM_ARGS = _h.CHROMIUM, _h.CHROMIUM_ARGS
# Every student has the app in a foreground tab: don't let chromium throttle the other contexts' timers.
BENCH_CHROMIUM_ARGS = [*CHROMIUM_ARGS, "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                       "--disable-backgrounding-occluded-windows"]

TARGET_TICKS_PER_S = 0.5
TARGET_P95_S = 1.5
# issue #17's class of 30: every student at least one tick and 15 training steps a second, p95 as above
CLASS_TICKS_PER_S, CLASS_STEPS_PER_S = 1.0, 15.0
TARGET_SOAK_MB_PER_MIN = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Installed in every page: polls the Step metric and the address bar every 25 ms, times the probes.
PROBE_JS = r"""
() => {
  if (window.__moe) return;
  const m = window.__moe = {changes: [], lat: [], timeouts: 0, pending: null, last: null};
  const stepText = () => {
    for (const el of document.querySelectorAll('[data-testid="stMetric"]')) {
      const label = el.querySelector('[data-testid="stMetricLabel"]');
      if (label && label.innerText.trim() === 'Step') {
        const v = el.querySelector('[data-testid="stMetricValue"]');
        return v ? v.innerText.trim() : null;
      }
    }
    return null;
  };
  document.addEventListener('keydown', () => {
    if (m.pending && m.pending.t0 === null) m.pending.t0 = Date.now();
  }, true);
  m.arm = (want) => { m.pending = {want: want, t0: null}; };
  setInterval(() => {
    const s = stepText();
    if (s !== null && s !== m.last) { m.last = s; m.changes.push([Date.now(), parseInt(s.replace(/,/g, ''), 10)]); }
    const p = m.pending;
    if (p && p.t0 !== null && new URLSearchParams(location.search).get('speed') === p.want) {
      m.lat.push([p.t0, Date.now() - p.t0]);
      m.pending = null;
    }
  }, 25);
}
"""


# -- server / client process statistics --------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def descendants(pid: int | tuple[int, ...]) -> list[int]:
    todo, seen = list(pid) if isinstance(pid, tuple) else [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def rss_bytes(pid: int | tuple[int, ...]) -> int:
    """Resident memory of a process, or the sum over the replicas' processes (a tuple of pids)."""
    if isinstance(pid, tuple):
        return sum(rss_bytes(p) for p in pid)
    with contextlib.suppress(OSError):
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    return 0


def cpu_seconds(pid: int | tuple[int, ...]) -> float:
    """CPU seconds of a process, or the sum over the replicas' processes (a tuple of pids)."""
    if isinstance(pid, tuple):
        return sum(cpu_seconds(p) for p in pid)
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    return 0.0


def server_pid(launcher_pid: int) -> int:
    """The process that serves: `python -m streamlit run` serves in-process; if a launcher forks, take the
    descendant with the largest RSS."""
    return max(descendants(launcher_pid), key=rss_bytes)


@contextlib.contextmanager
def fresh_server(quiet_pct: float | None, replicas: int = 0, pin: bool = True):
    """A new app server on a free port (after waiting for the machine to be quiet, if asked): (url, server pid).
    replicas = 2: two app processes behind the shipped deploy/nginx.conf (e2e_helpers.nginx_stack; pin: each on
    its own core, as docs/deploy.md starts them), and the pid is a tuple of the replicas' pids (CPU and RSS are
    then summed over them)."""
    if quiet_pct is not None:
        wait_for_quiet(quiet_pct)
    if replicas:
        with e2e_helpers.nginx_stack(replicas, pin) as (url, procs):
            yield url, tuple(server_pid(p.pid) for p in procs)
        return
    port = free_port()
    proc = start_app(port)
    try:
        yield f"http://127.0.0.1:{port}", server_pid(proc.pid)
    finally:
        stop_app(proc)


def wait_for_quiet(max_other_pct: float, timeout_s: float = 1800, sample_s: float = 10, log=print) -> float:
    """Wait until the rest of the machine (everything but this script and its children) uses at most
    max_other_pct % of one core over `sample_s` seconds. Other people's jobs share this machine. Returns it."""
    deadline = time.time() + timeout_s
    while True:
        mine0 = sum(cpu_seconds(p) for p in descendants(os.getpid()))
        busy0, _ = machine_busy_seconds()
        time.sleep(sample_s)
        mine1 = sum(cpu_seconds(p) for p in descendants(os.getpid()))
        busy1, _ = machine_busy_seconds()
        other = 100 * ((busy1 - busy0) - (mine1 - mine0)) / sample_s
        if other <= max_other_pct or time.time() > deadline:
            return other
        log(f"  waiting for a quieter machine: others use {other:.0f} % of a core (load {loadavg():.2f})")


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return (sum(parts) - idle) / CLK_TCK, sum(parts) / CLK_TCK


class Sampler(threading.Thread):
    """Samples server RSS every `every` seconds; CPU comes from deltas between mark() calls."""

    def __init__(self, pid: int, every: float = 1.0):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []  # (time.time(), rss bytes)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.time(), rss_bytes(self.pid)))
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def between(self, t0: float, t1: float) -> list[int]:
        return [r for t, r in self.samples if t0 <= t <= t1]


@dataclass
class CpuMark:
    t: float
    server: float
    client: float
    machine_busy: float
    machine_total: float
    load1: float

    @classmethod
    def now(cls, server: int, exclude: set[int]) -> CpuMark:
        client = sum(cpu_seconds(p) for p in descendants(os.getpid()) if p not in exclude and p != os.getpid())
        busy, total = machine_busy_seconds()
        return cls(time.time(), cpu_seconds(server), client + cpu_seconds(os.getpid()), busy, total, loadavg())


def cpu_between(a: CpuMark, b: CpuMark) -> dict:
    dt = max(1e-9, b.t - a.t)
    server = 100 * (b.server - a.server) / dt
    client = 100 * (b.client - a.client) / dt
    machine = 100 * (b.machine_busy - a.machine_busy) / dt  # % of one core, all cores summed
    return {"server_cpu_pct": server, "client_cpu_pct": client, "machine_cpu_pct": machine,
            "other_cpu_pct": max(0.0, machine - server - client), "load1_start": a.load1, "load1_end": b.load1}


# -- browser sessions ----------------------------------------------------------------------------------------------
def speed_slider(page):
    return page.get_by_test_id("stSlider").filter(has_text=re.compile(r"^Speed")).get_by_role("slider")


@dataclass
class Student:
    index: int
    context: object
    page: object
    armed: bool = False  # a probe is in flight
    want: str | None = None  # the speed the address bar should show when it lands (None: no speed parameter)
    armed_at: float = 0.0
    next_probe: float = 0.0
    timeouts: int = 0
    replica: str | None = None  # behind nginx: the upstream that served the page (X-Upstream)
    errors: list[str] = field(default_factory=list)


def open_student(browser, url: str, index: int, timeout_ms: int = 120_000) -> Student:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    response = page.goto(url, timeout=timeout_ms)
    step = page.get_by_test_id("stMetric").filter(has_text="Step").get_by_test_id("stMetricValue").first
    expect(step).to_be_visible(timeout=timeout_ms)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=timeout_ms)
    page.evaluate(PROBE_JS)
    page.get_by_role("button", name="Play", exact=True).click(timeout=timeout_ms)
    expect(page.get_by_role("button", name="Pause", exact=True)).to_be_visible(timeout=timeout_ms)
    return Student(index, context, page, replica=response.headers.get("x-upstream") if response else None)


def _probe(student: Student, now: float, timeout_s: float) -> None:
    """Close the previous probe (timeout if it never landed), then press the next key."""
    page = student.page
    if student.armed:
        pending = page.evaluate("() => window.__moe.pending")
        if pending is None:
            student.armed = False  # it landed: the page recorded the latency
        elif now - student.armed_at < timeout_s:
            return  # still waiting for this one
        else:
            student.timeouts += 1
            seen = page.evaluate("() => [new URLSearchParams(location.search).get('speed'), window.__moe.pending.t0]")
            value = speed_slider(page).get_attribute("aria-valuenow", timeout=5_000)
            student.errors.append(f"timeout: wanted speed={student.want}, url speed={seen[0]}, "
                                  f"slider={value}, keydown seen={seen[1] is not None}")
            page.evaluate("() => { window.__moe.pending = null; }")
            student.armed = False
            # the URL never caught up: resynchronise on whatever the page shows now
    current = page.evaluate("() => new URLSearchParams(location.search).get('speed')")
    want, key = ("21", "ArrowRight") if current is None else (None, "ArrowLeft")
    page.evaluate("(w) => window.__moe.arm(w)", want)
    try:
        speed_slider(page).press(key, timeout=10_000)
    except Exception as exc:  # noqa: BLE001 - a stalled page is a measurement, not a crash
        student.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
        page.evaluate("() => { window.__moe.pending = null; }")
        return
    student.armed, student.want, student.armed_at = True, want, now


# -- wire students: Streamlit's own protocol, without a browser ---------------------------------------------------
class WireStudent:
    """One session driven over /_stcore/stream exactly as the frontend drives it, minus the rendering.

    It sends the same BackMsgs a browser sends: the first run, a trigger for the Play button, a rerun of the
    ticking fragment every AutoRerun.interval (the frontend's setInterval, also regardless of whether a run is
    in progress; the server folds those into one pending rerun), and reruns with the Speed slider's new value
    (of the slider's fragment, as the frontend sends them; a full rerun were it drawn outside one). It reads the
    same ForwardMsgs: the Step metric's value (a tick), the address bar (page_info_changed: the probe landed).
    Why it exists: on a 2-core machine a ticking Playground tab costs chromium ~0.5-1 core (React + Plotly), so
    ten real tabs measure the browsers, not the server; a wire student costs ~1 % of a core.
    Latency is measured from the BackMsg leaving to the ForwardMsg arriving, so it excludes the frontend's own
    work (slider handling, rendering), which a real student's laptop does."""

    def __init__(self, index: int, url: str):
        self.index = index
        self.url = url
        self.changes: list[list[float]] = []  # [Date.now()-style ms, step], like the page probe
        self.lat: list[list[float]] = []  # [t0 ms, latency ms]
        self.timeouts = 0
        self.errors: list[str] = []
        self.replica: str | None = None  # behind nginx: the upstream of the WebSocket
        self.query_string = ""
        self.page_script_hash = ""
        self.buttons: dict[str, str] = {}  # label -> widget id
        self.speed_id: str | None = None
        self.speed_fragment = ""  # the fragment the slider is drawn in ("" = none): its change reruns only that
        self.speed_value = 20
        self.states: dict[str, object] = {}  # widget id -> WidgetState the "frontend" holds
        self.pending: tuple[str | None, float] | None = None  # (wanted speed, t0)
        self.last_step: int | None = None
        self.runs = 0
        self.full_runs = 0  # runs of the whole page (the others ran fragments only)
        self.fragment_timers: dict[str, object] = {}
        self.ws = None
        self.playing = None  # asyncio.Event, set once Pause shows up

    # protocol ----------------------------------------------------------------------------------------------
    def _rerun_msg(self, fragment_id: str = "", auto: bool = False, triggers: tuple[str, ...] = ()) -> bytes:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        msg = BackMsg()
        cs = msg.rerun_script
        cs.query_string = self.query_string
        cs.page_script_hash = self.page_script_hash
        cs.fragment_id = fragment_id
        cs.is_auto_rerun = auto
        cs.context_info.timezone = "UTC"
        cs.context_info.locale = "en-US"
        cs.context_info.url = self.url + ("?" + self.query_string if self.query_string else "")
        for state in self.states.values():
            cs.widget_states.widgets.append(state)
        for wid in triggers:
            cs.widget_states.widgets.append(WidgetState(id=wid, trigger_value=True))
        return msg.SerializeToString()

    def _on_message(self, data: bytes) -> None:
        from urllib.parse import parse_qs

        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        msg = ForwardMsg()
        msg.ParseFromString(data)
        kind = msg.WhichOneof("type")
        now = time.time() * 1000
        if kind == "navigation":  # st.navigation names the page that ran: later reruns ask for it again
            self.page_script_hash = msg.navigation.page_script_hash
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
            el = msg.delta.new_element
            what = el.WhichOneof("type")
            if what == "metric" and el.metric.label == "Step":
                step = int(el.metric.body.replace(",", ""))
                if step != self.last_step:
                    self.last_step = step
                    self.changes.append([now, step])
            elif what == "button":
                self.buttons[el.button.label] = el.button.id
                if el.button.label == "Pause" and self.playing is not None:
                    self.playing.set()
            elif what == "slider" and el.slider.label.startswith("Speed"):
                self.speed_id = el.slider.id
                self.speed_fragment = msg.delta.fragment_id
        elif kind == "page_info_changed":
            self.query_string = msg.page_info_changed.query_string
            if self.pending is not None:
                want, t0 = self.pending
                if parse_qs(self.query_string).get("speed", [None])[0] == want:
                    self.lat.append([t0, now - t0])
                    self.pending = None
        elif kind == "auto_rerun":
            self._start_timer(msg.auto_rerun.fragment_id, msg.auto_rerun.interval)
        elif kind == "stop_auto_rerun":
            for fid in msg.stop_auto_rerun.fragment_ids:
                timer = self.fragment_timers.pop(fid, None)
                if timer is not None:
                    timer.cancel()
        elif kind == "script_finished":
            self.runs += 1
            self.full_runs += msg.script_finished == ForwardMsg.ScriptFinishedStatus.FINISHED_SUCCESSFULLY

    def _start_timer(self, fragment_id: str, interval: float) -> None:
        import asyncio

        old = self.fragment_timers.get(fragment_id)
        if old is not None and getattr(old, "interval", None) == interval:
            return  # the frontend keeps a timer whose interval did not change
        if old is not None:
            old.cancel()

        async def tick() -> None:
            nxt = time.monotonic() + interval
            while True:
                await asyncio.sleep(max(0.0, nxt - time.monotonic()))
                nxt = max(nxt + interval, time.monotonic())
                await self.ws.send(self._rerun_msg(fragment_id, auto=True))

        task = asyncio.get_running_loop().create_task(tick())
        task.interval = interval
        self.fragment_timers[fragment_id] = task

    # behaviour -----------------------------------------------------------------------------------------------
    async def open_and_play(self, timeout: float = 120.0) -> None:
        import asyncio

        await self.open(timeout)
        await self.ws.send(self._rerun_msg(triggers=(self.buttons["Play"],)))
        await asyncio.wait_for(self.playing.wait(), timeout)

    async def open(self, timeout: float = 120.0) -> None:
        """Connect and run the page once, as a browser opening it does; returns once the Play button is there."""
        import asyncio

        import websockets

        ws_url = self.url.replace("http://", "ws://").rstrip("/") + "/_stcore/stream"
        self.ws = await websockets.connect(ws_url, subprotocols=["streamlit"], max_size=None, compression=None,
                                           open_timeout=timeout, ping_interval=None)
        self.replica = self.ws.response.headers.get("X-Upstream") if self.ws.response else None
        self.playing = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())
        await self.ws.send(self._rerun_msg())
        deadline = time.monotonic() + timeout
        while "Play" not in self.buttons:
            if time.monotonic() > deadline:
                raise TimeoutError(f"wire student {self.index}: no Play button")
            await asyncio.sleep(0.05)

    async def _read(self) -> None:
        try:
            async for data in self.ws:
                if isinstance(data, bytes):
                    self._on_message(data)
        except Exception as exc:  # noqa: BLE001 - recorded, the measurement shows the stall
            self.errors.append(f"{type(exc).__name__}: {exc}"[:160])

    async def probe(self, timeout_s: float) -> None:
        if self.pending is not None:
            if time.time() * 1000 - self.pending[1] < timeout_s * 1000:
                return
            self.timeouts += 1
            self.errors.append(f"timeout: wanted speed={self.pending[0]}, url={self.query_string!r}")
            self.pending = None
        if self.speed_id is None:
            return
        self.pending = ("21" if self.speed_value == 20 else None, time.time() * 1000)
        await self.set_speed(21 if self.speed_value == 20 else 20)

    async def set_speed(self, value: int, full_run: bool = False) -> None:
        """Move the Speed slider to `value`: the rerun the frontend sends (of the slider's fragment), or a rerun of
        the whole page carrying it (as when the change coalesces with a full rerun on the server)."""
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        self.speed_value = value
        state = WidgetState(id=self.speed_id)
        state.double_array_value.data.append(float(value))
        self.states[self.speed_id] = state
        await self.ws.send(self._rerun_msg("" if full_run else self.speed_fragment))

    async def close(self) -> None:
        import asyncio

        tasks = [*self.fragment_timers.values(), *([self._reader] if getattr(self, "_reader", None) else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()


class WireClass:
    """N wire students on an asyncio loop in a background thread (Playwright's sync API keeps the main one)."""

    def __init__(self, url: str, n: int, first_index: int = 0):
        import asyncio

        self.students = [WireStudent(first_index + i, url) for i in range(n)]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._prober = None

    def call(self, coro, timeout: float = 300):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def open_all(self, log=print) -> None:
        for s in self.students:
            self.call(s.open_and_play())
            log(f"  wire session {s.index + 1} playing")

    def start_probes(self, t0: float, every: float, timeout_s: float, n_total: int) -> None:
        import asyncio

        async def run() -> None:
            nxt = {s.index: t0 + every * (s.index + 0.5) / n_total for s in self.students}
            while True:
                now = time.time()
                for s in self.students:
                    if nxt[s.index] <= now:
                        await s.probe(timeout_s)
                        nxt[s.index] += every
                await asyncio.sleep(0.02)

        self._prober = asyncio.run_coroutine_threadsafe(run(), self.loop)

    def stop_probes(self, timeout_s: float) -> None:
        if self._prober is not None:
            self._prober.cancel()
        deadline = time.time() + timeout_s
        while time.time() < deadline and any(s.pending for s in self.students):
            time.sleep(0.1)
        for s in self.students:
            if s.pending is not None:
                s.timeouts += 1
                s.errors.append(f"timeout at the end: wanted speed={s.pending[0]}")
                s.pending = None

    def close(self) -> None:
        import asyncio

        if self._prober is not None:
            self._prober.cancel()

        async def close_all() -> None:
            await asyncio.gather(*(s.close() for s in self.students), return_exceptions=True)

        with contextlib.suppress(Exception):
            self.call(close_all(), timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    if lo == hi or math.isinf(xs[hi]):  # a timeout (+inf) in the interpolation: the percentile is a timeout too
        return xs[hi] if k > lo else xs[lo]
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def session_stats(changes: list[list[float]], t0_ms: float, t1_ms: float) -> dict:
    inside = [(t, s) for t, s in changes if t0_ms <= t <= t1_ms]
    before = [(t, s) for t, s in changes if t < t0_ms]
    seconds = (t1_ms - t0_ms) / 1000
    ticks = len(inside)
    start_step = before[-1][1] if before else (inside[0][1] if inside else 0)
    end_step = inside[-1][1] if inside else start_step
    times = [t0_ms] + [t for t, _ in inside] + [t1_ms]
    stall = max(b - a for a, b in zip(times, times[1:], strict=False)) / 1000
    steps = max(0, end_step - start_step)
    return {"ticks": ticks, "ticks_per_s": ticks / seconds, "steps": steps, "steps_per_s": steps / seconds,
            "steps_per_tick": steps / ticks if ticks else 0.0, "max_stall_s": stall}


def _summary(rows: list[dict], prefix: str = "") -> dict:
    if not rows:
        return {}
    lat = [x for r in rows for x in r["_lat"]] + [math.inf] * sum(r["timeouts"] for r in rows)
    ticks = [r["ticks_per_s"] for r in rows]
    return {
        f"{prefix}ticks_per_s_min": min(ticks), f"{prefix}ticks_per_s_median": statistics.median(ticks),
        f"{prefix}ticks_per_s_max": max(ticks),
        f"{prefix}steps_per_s_median": statistics.median(r["steps_per_s"] for r in rows),
        f"{prefix}max_stall_s": max(r["max_stall_s"] for r in rows),
        f"{prefix}probes": len(lat), f"{prefix}timeouts": sum(r["timeouts"] for r in rows),
        f"{prefix}latency_p50_s": percentile(lat, 0.5), f"{prefix}latency_p95_s": percentile(lat, 0.95),
        f"{prefix}latency_max_s": max(lat) if lat else float("nan"),
    }


def open_class(browser, url: str, n_sessions: int, n_browsers: int | None, log=print) -> dict:
    """The first n_browsers students are chromium pages, the others wire students. Returns {"browsers", "wire"}."""
    n_browsers = n_sessions if n_browsers is None else min(n_browsers, n_sessions)
    t_open = time.time()
    pages: list[Student] = []
    for i in range(n_browsers):
        pages.append(open_student(browser, url, i))
        log(f"  browser session {i + 1}/{n_browsers} playing ({time.time() - t_open:.1f} s)")
    wire = WireClass(url, n_sessions - n_browsers, first_index=n_browsers) if n_sessions > n_browsers else None
    if wire is not None:
        wire.open_all(log=lambda m: None)
        log(f"  {len(wire.students)} wire sessions playing ({time.time() - t_open:.1f} s)")
    return {"browsers": pages, "wire": wire}


def measure_classroom(browser, url: str, server: int, n_sessions: int, seconds: float, warmup: float = 5.0,
                      probe_every: float = 3.0, probe_timeout: float = 10.0, n_browsers: int | None = None,
                      log=print) -> dict:
    """Open n_sessions students (n_browsers of them real pages, default all), press Play in each, measure for
    `seconds`. The students stay open in the result under "_class" (close them with close_students)."""
    sampler = Sampler(server)
    sampler.start()
    rss_idle = rss_bytes(server)
    klass = open_class(browser, url, n_sessions, n_browsers, log)
    pages, wire = klass["browsers"], klass["wire"]
    time.sleep(warmup)
    exclude = set(descendants(server))
    mark0 = CpuMark.now(server, exclude)
    t0 = time.time()
    end = t0 + seconds
    for s in pages:  # stagger the probes over one period
        s.next_probe = t0 + probe_every * (s.index + 0.5) / n_sessions
    if wire is not None:
        wire.start_probes(t0, probe_every, probe_timeout, n_sessions)
    while (now := time.time()) < end:
        due = [s for s in pages if s.next_probe <= now]
        for s in due:
            _probe(s, now, probe_timeout)
            s.next_probe = max(s.next_probe + probe_every, time.time())
        time.sleep(0.05 if not due else 0)
    t1 = time.time()
    mark1 = CpuMark.now(server, exclude)
    # let probes sent near the end land (or time out) before reading the results
    deadline = time.time() + probe_timeout
    for s in pages:
        if s.armed:
            while time.time() < deadline and s.page.evaluate("() => window.__moe.pending") is not None:
                time.sleep(0.1)
            if s.page.evaluate("() => window.__moe.pending") is not None:
                s.timeouts += 1
    if wire is not None:
        wire.stop_probes(max(0.0, deadline - time.time()))
    sampler.stop()

    rows = []
    window_ms = (t0 * 1000, t1 * 1000 + probe_timeout * 1000)
    sources = [("browser", s, s.page.evaluate("() => ({changes: window.__moe.changes, lat: window.__moe.lat})"))
               for s in pages]
    sources += [("wire", s, {"changes": list(s.changes), "lat": list(s.lat)}) for s in (wire.students if wire else [])]
    for kind, s, data in sources:
        stats = session_stats(data["changes"], t0 * 1000, t1 * 1000)
        lat = [ms / 1000 for t, ms in data["lat"] if window_ms[0] <= t <= window_ms[1]]
        rows.append({"session": s.index, "client": kind, "replica": s.replica, **stats, "probes": len(lat) + s.timeouts,
                     "timeouts": s.timeouts, "latency_p50_s": percentile(lat, 0.5),
                     "latency_p95_s": percentile(lat, 0.95), "errors": list(s.errors), "_lat": lat})
    rss_window = sampler.between(t0, t1) or [rss_bytes(server)]
    result = {
        "sessions": n_sessions, "browsers": len(pages), "wire": n_sessions - len(pages),
        "seconds": round(t1 - t0, 1), "warmup_s": warmup, "probe_every_s": probe_every,
        **_summary(rows),
        **_summary([r for r in rows if r["client"] == "browser"], "browser_"),
        **_summary([r for r in rows if r["client"] == "wire"], "wire_"),
        "steps_per_tick_median": statistics.median(r["steps_per_tick"] for r in rows),
        "rss_idle_mb": rss_idle / 1e6, "rss_start_mb": rss_window[0] / 1e6, "rss_end_mb": rss_window[-1] / 1e6,
        "rss_peak_mb": max(r for _, r in sampler.samples) / 1e6 if sampler.samples else float("nan"),
        **cpu_between(mark0, mark1),
        "per_session": [{k: v for k, v in r.items() if k != "_lat"} for r in rows],
        "_class": klass,
    }
    ticks_per_s = sum(r["ticks_per_s"] for r in rows)  # all students together
    # server CPU per student-tick: what one student's tick (training, snapshot, figures, rerun) costs the server
    result["server_cpu_ms_per_tick"] = 10 * result["server_cpu_pct"] / ticks_per_s if ticks_per_s else float("nan")
    result["meets_targets"] = bool(result["ticks_per_s_min"] >= TARGET_TICKS_PER_S
                                   and result["latency_p95_s"] <= TARGET_P95_S)
    result["meets_class_targets"] = bool(result["ticks_per_s_min"] >= CLASS_TICKS_PER_S
                                         and min(r["steps_per_s"] for r in rows) >= CLASS_STEPS_PER_S
                                         and result["latency_p95_s"] <= TARGET_P95_S)
    # behind nginx: how many students each replica got (first visits take turns, so 15/15 for a class of 30)
    replicas = [r["replica"] for r in rows if r["replica"]]
    result["replica_split"] = sorted(Counter(replicas).values(), reverse=True) if replicas else None
    return result


def close_students(result: dict) -> None:
    klass = result.pop("_class", None) or {}
    for s in klass.get("browsers", []):
        with contextlib.suppress(Exception):
            s.context.close()
    if klass.get("wire") is not None:
        klass["wire"].close()


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return slope, my - slope * mx


def soak(browser, url: str, server: int, n_sessions: int, minutes: float, every: float = 5.0,
         n_browsers: int | None = None, log=print) -> dict:
    """n_sessions students train for `minutes`; RSS sampled every `every` s; slope over the last 80 %."""
    klass = open_class(browser, url, n_sessions, n_browsers, log)
    exclude = set(descendants(server))
    mark0 = CpuMark.now(server, exclude)
    t0 = time.time()
    samples: list[tuple[float, float]] = []
    end = t0 + minutes * 60
    next_log = t0
    while (now := time.time()) < end:
        samples.append(((now - t0) / 60, rss_bytes(server) / 1e6))
        if now >= next_log:
            log(f"  {samples[-1][0]:5.1f} min  RSS {samples[-1][1]:7.1f} MB  load {loadavg():.2f}")
            next_log += 60
        time.sleep(every)
    mark1 = CpuMark.now(server, exclude)
    steps = [(lambda c: c[-1][1] if c else 0)(s.page.evaluate("() => window.__moe.changes"))
             for s in klass["browsers"]]
    steps += [s.last_step or 0 for s in (klass["wire"].students if klass["wire"] else [])]
    tail = samples[len(samples) // 5:]
    slope, _ = linear_fit([t for t, _ in tail], [r for _, r in tail])
    result = {"sessions": n_sessions, "browsers": len(klass["browsers"]), "minutes": minutes, "sample_every_s": every,
              "rss_start_mb": samples[0][1], "rss_end_mb": samples[-1][1], "rss_peak_mb": max(r for _, r in samples),
              "rss_slope_mb_per_min": slope, "fit_from_min": tail[0][0], "steps_per_session": steps,
              "samples": samples, **cpu_between(mark0, mark1), "_class": klass}
    result["meets_target"] = slope < TARGET_SOAK_MB_PER_MIN
    return result


def release_after_close(result: dict, server: int, ttl: float, margin: float = 30.0, log=print) -> dict:
    """Close every student's browser context and follow RSS past server.disconnectedSessionTTL."""
    before = rss_bytes(server) / 1e6
    close_students(result)
    t0 = time.time()
    trace = []
    while time.time() - t0 < ttl + margin:
        trace.append((round(time.time() - t0, 1), rss_bytes(server) / 1e6))
        time.sleep(2)
    after = rss_bytes(server) / 1e6
    log(f"  RSS {before:.1f} MB with sessions open -> {after:.1f} MB {ttl + margin:.0f} s after closing them")
    return {"rss_open_mb": before, "rss_after_close_mb": after, "wait_s": ttl + margin, "trace": trace}


def shipped_ttl() -> float:
    import tomllib

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    return float(config.get("server", {}).get("disconnectedSessionTTL", 120))


# -- reporting -----------------------------------------------------------------------------------------------------
def _lat(r: dict, prefix: str = "") -> str:
    if not r.get(f"{prefix}probes"):
        return "–"
    return (f"{r[prefix + 'latency_p50_s']:.2f} / {r[prefix + 'latency_p95_s']:.2f} / "
            f"{r[prefix + 'latency_max_s']:.2f}")


def markdown_table(results: list[dict]) -> str:
    head = ("| N | clients | ticks/s per session (min / median / max) | longest stall s | steps/s per session | "
            "latency p50 / p95 / max s, all | … browser sessions only | probes (timeouts) | "
            "server RSS MB (idle → end, peak) | server CPU % | client CPU % | other CPU % | load avg 1 min | "
            "targets |")
    rows = [head, "|" + "---|" * 14]
    for r in results:
        clients = f"{r['browsers']} browser" + (f" + {r['wire']} wire" if r["wire"] else "")
        rows.append(
            f"| {r['sessions']} | {clients} | {r['ticks_per_s_min']:.2f} / {r['ticks_per_s_median']:.2f} / "
            f"{r['ticks_per_s_max']:.2f} | {r['max_stall_s']:.1f} | {r['steps_per_s_median']:.0f} | "
            f"{_lat(r)} | {_lat(r, 'browser_') if r['wire'] else '(same)'} | {r['probes']} ({r['timeouts']}) | "
            f"{r['rss_idle_mb']:.0f} → {r['rss_end_mb']:.0f}, {r['rss_peak_mb']:.0f} | {r['server_cpu_pct']:.0f} | "
            f"{r['client_cpu_pct']:.0f} | {r['other_cpu_pct']:.0f} | {r['load1_start']:.2f} → {r['load1_end']:.2f} | "
            f"{'met' if r['meets_targets'] else 'MISSED'} |")
    return "\n".join(rows)


def soak_table(r: dict) -> str:
    return "\n".join([
        "| sessions | clients | minutes | RSS start → end MB (peak) | slope MB/min (fit from min) | server CPU % | "
        "load avg 1 min | target < 1 MB/min |",
        "|---|---|---|---|---|---|---|---|",
        f"| {r['sessions']} | {r['browsers']} browser + {r['sessions'] - r['browsers']} wire | {r['minutes']:g} | "
        f"{r['rss_start_mb']:.0f} → {r['rss_end_mb']:.0f} "
        f"({r['rss_peak_mb']:.0f}) | {r['rss_slope_mb_per_min']:+.2f} (from {r['fit_from_min']:.1f}) | "
        f"{r['server_cpu_pct']:.0f} | {r['load1_start']:.2f} → {r['load1_end']:.2f} | "
        f"{'met' if r['meets_target'] else 'MISSED'} |"])


def _launch(playwright):
    if CHROMIUM is None:
        raise SystemExit("Debian's chromium is not installed (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=BENCH_CHROMIUM_ARGS, headless=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--seconds", type=float, default=60.0, help="measurement window per N")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of ticking before the window opens")
    ap.add_argument("--probe-every", type=float, default=3.0, help="seconds between control probes per session")
    ap.add_argument("--probe-timeout", type=float, default=10.0)
    ap.add_argument("--soak-minutes", type=float, default=0.0, help="soak mode: one N (the first --sessions)")
    ap.add_argument("--release-rounds", type=int, default=0,
                    help="after each N (or the soak), close the sessions and follow RSS past the TTL; "
                         "with no measurement (--seconds 0) run this many open/train/close rounds")
    ap.add_argument("--browsers", type=int, default=None,
                    help="how many of the N sessions are chromium pages (default: all); the rest are wire students")
    ap.add_argument("--replicas", type=int, default=0, choices=(0, 2),
                    help="2: two app processes behind the shipped deploy/nginx.conf, each on its own core (students "
                         "connect to nginx); 0: one process, directly")
    ap.add_argument("--no-pin", action="store_true",
                    help="with --replicas: let the replicas run on any core instead of one core each")
    ap.add_argument("--quiet", type=float, default=None, metavar="PCT",
                    help="before each measurement wait (up to 30 min) until other jobs use at most PCT %% of a core")
    ap.add_argument("--out", type=Path, help="write every number as JSON here")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the server and the browser

    ttl = shipped_ttl()
    report: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "cpus": os.cpu_count(),
                    "load1_before": loadavg(), "shipped_ttl_s": ttl, "runs": []}
    print(f"load average before: {Path('/proc/loadavg').read_text().strip()}  (cpus: {os.cpu_count()})")
    with sync_playwright() as pw:
        browser = _launch(pw)
        try:
            if args.soak_minutes:
                n = args.sessions[0]
                with fresh_server(args.quiet, args.replicas, not args.no_pin) as (url, server):
                    print(f"soak: {n} sessions for {args.soak_minutes:g} min (server pid {server})")
                    r = soak(browser, url, server, n, args.soak_minutes, n_browsers=args.browsers)
                    if args.release_rounds:
                        r["release"] = release_after_close(r, server, ttl)
                    close_students(r)
                report["soak"] = r
                print(soak_table(r))
            else:
                for n in args.sessions:
                    with fresh_server(args.quiet, args.replicas, not args.no_pin) as (url, server):
                        print(f"N = {n}: {args.seconds:g} s window (server pid {server}, load {loadavg():.2f})")
                        for rnd in range(max(1, args.release_rounds)):
                            r = measure_classroom(browser, url, server, n, args.seconds, args.warmup,
                                                  args.probe_every, args.probe_timeout, n_browsers=args.browsers)
                            if args.release_rounds:
                                r["release"] = release_after_close(r, server, ttl)
                                r["round"] = rnd + 1
                            close_students(r)
                            report["runs"].append(r)
                            print(markdown_table([r]).splitlines()[-1])
                            print(f"server CPU per student-tick: {r['server_cpu_ms_per_tick']:.1f} ms; "
                                  f"steps/s per student min {min(x['steps_per_s'] for x in r['per_session']):.1f}; "
                                  f"class targets (>= {CLASS_TICKS_PER_S:g} tick/s, >= {CLASS_STEPS_PER_S:g} steps/s, "
                                  f"p95 <= {TARGET_P95_S:g} s): {'met' if r['meets_class_targets'] else 'MISSED'}"
                                  + (f"; students per replica {r['replica_split']}" if r["replica_split"] else ""))
                print()
                print(markdown_table(report["runs"]))
        finally:
            browser.close()
    report["load1_after"] = loadavg()
    print(f"load average after: {Path('/proc/loadavg').read_text().strip()}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, default=str))
        print(f"wrote {args.out}")
    runs = report["runs"] + ([report["soak"]] if "soak" in report else [])
    ok = all(r.get("meets_targets", r.get("meets_target", True)) for r in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
