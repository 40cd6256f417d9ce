"""Speed reruns its own fragment, not the page, and its change holds whichever run delivers it.

Driven over Streamlit's own protocol (bench_classroom.WireStudent), which sees what a browser cannot: whether a
run was the whole page or a fragment, and a rerun that carries the new value to a full run of the page (what the
server makes of a change that lands beside a full rerun it already has queued).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_classroom as bench  # noqa: E402

TIMEOUT_S = 30.0


async def until(what: str, ok: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def speed_in_url(student: bench.WireStudent) -> str | None:
    return parse_qs(student.query_string).get("speed", [None])[0]


def test_speed_reruns_its_fragment_and_its_change_holds_in_a_full_run(app_url: str):
    async def walk() -> None:
        student = bench.WireStudent(0, app_url)
        try:
            await student.open()
            await until("the Speed slider", lambda: student.speed_id is not None)
            assert student.speed_fragment, "Speed is drawn inside a fragment"
            await until("the first run to finish", lambda: student.full_runs >= 1)  # open() returns mid-run
            full_runs, runs = student.full_runs, student.runs

            await student.set_speed(21)
            await until("speed=21 in the address bar", lambda: speed_in_url(student) == "21")
            await until("the run to finish", lambda: student.runs > runs)
            assert student.full_runs == full_runs, "moving Speed reran the whole page"

            # The next change reaches the server inside a full run: it must hold there too (the sidebar's
            # controls, drawn first, once wrote the settings' old speed back over it)
            await student.set_speed(20, full_run=True)
            await until("the default speed, which the address bar leaves out", lambda: speed_in_url(student) is None)
            await until("the full run", lambda: student.full_runs > full_runs)
            await asyncio.sleep(0.5)
            assert speed_in_url(student) is None, f"the page went back to {student.query_string!r}"

            await student.set_speed(22)  # and a fragment's change after a full run
            await until("speed=22 in the address bar", lambda: speed_in_url(student) == "22")
        finally:
            await student.close()

    # a thread of its own: the browser tests' Playwright keeps an event loop running in this one
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(walk())).result()


def test_an_address_bar_whose_update_was_lost_is_put_right_by_the_ticks(app_url: str):
    """Streamlit drops the messages of a run that ends while the server takes the browser's next request, so now
    and then a Speed move's address bar and Share link never arrive (about 1 in 1,000 in a busy class). Here the
    browser is left with an address bar that the page no longer shows, as such a loss leaves it: while training, the
    ticks see it in the address bar each of them sends and ask for one full run, which redraws it. Ticks that agree
    with the page ask for nothing."""
    async def walk() -> None:
        student = bench.WireStudent(0, app_url)
        try:
            await student.open_and_play()
            await until("the first run to finish", lambda: student.full_runs >= 1)
            await asyncio.sleep(3 * 0.8)  # ticks in sync: no full run
            full_runs, ticks = student.full_runs, len(student.changes)
            await asyncio.sleep(3 * 0.8)
            assert len(student.changes) > ticks, "the page is not ticking"
            assert student.full_runs == full_runs, "ticks in sync with the page asked for a full run"

            student.query_string = "speed=21"  # the page trains at the default speed, 20
            await until("the address bar put right", lambda: speed_in_url(student) is None)
            await until("the full run that put it right", lambda: student.full_runs > full_runs)
            await asyncio.sleep(3 * 0.8)
            assert student.full_runs == full_runs + 1, "one full run puts it right"
        finally:
            await student.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(walk())).result()
