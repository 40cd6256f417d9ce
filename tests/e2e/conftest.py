"""Real-browser tests: the app served by `streamlit run` with the SHIPPED configuration, driven by
Playwright in Debian's chromium (never a downloaded browser: `playwright install` needs a CDN).

Without chromium the tests skip with a reason; CI sets MOE_REQUIRE_BROWSER=1, which turns that into a
failure so the browser suite cannot silently disappear. Screenshots of failures go to
test-artifacts/playwright/ (pytest-playwright's --screenshot=only-on-failure, set in pyproject.toml).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/e2e/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)
    if CHROMIUM is None and os.environ.get("MOE_REQUIRE_BROWSER") != "1":
        skip = pytest.mark.skip(reason="Debian's chromium is not installed (apt-get install chromium); "
                                       "the browser tests need it")
        for item in items:
            if "e2e" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if CHROMIUM is None:
        pytest.fail("MOE_REQUIRE_BROWSER=1 but no chromium on PATH: install Debian's chromium")
    args = {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}
    args.pop("channel", None)
    return args


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(port: int, extra: list[str] | None = None, log_path: Path | None = None,
              script: str = "app/streamlit_app.py", cpu: int | None = None) -> subprocess.Popen:
    """`streamlit run` from the repository root, so that .streamlit/config.toml (the shipped one) applies.
    cpu: run it on that core only (`taskset -c`, as docs/deploy.md starts replicas)."""
    cmd = [sys.executable, "-m", "streamlit", "run", script, f"--server.port={port}",
           "--server.address=127.0.0.1", *(extra or [])]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as r:
                if r.read() == b"ok":
                    return proc
        except OSError:
            time.sleep(0.2)
    stop_app(proc)
    raise RuntimeError("streamlit did not become healthy within 60 s")


def stop_app(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(os.environ.get("MOE_ARTIFACTS_DIR", ROOT / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


APP_LOG = "streamlit-e2e.log"


def tracebacks(text: str) -> list[str]:
    """The tracebacks in a server log, each with the lines that say what failed."""
    blocks = text.split("Traceback (most recent call last):")[1:]
    return ["Traceback (most recent call last):" + block[:2000] for block in blocks]


@pytest.fixture(scope="session")
def app_url(artifacts) -> Iterator[str]:
    port = free_port()
    proc = start_app(port, log_path=artifacts / APP_LOG)
    yield f"http://127.0.0.1:{port}"
    stop_app(proc)
    found = tracebacks((artifacts / APP_LOG).read_text(errors="replace"))
    if found:  # a learner saw "This app has encountered an error" (or worse, nothing) somewhere in the run
        pytest.fail(f"the app server logged {len(found)} traceback(s) during the browser tests:\n{found[0]}")


@pytest.fixture(autouse=True)
def no_server_traceback(request, artifacts) -> Iterator[None]:
    """Fail the test during which the shared app server logged a traceback (the run-wide check is app_url's)."""
    if "app_url" not in request.fixturenames:
        yield
        return
    log = artifacts / APP_LOG
    start = log.stat().st_size if log.exists() else 0
    yield
    if log.exists():
        with open(log, "rb") as f:
            f.seek(start)
            found = tracebacks(f.read().decode(errors="replace"))
        assert not found, f"the app server logged a traceback during this test:\n{found[0]}"
