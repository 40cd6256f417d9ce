"""deploy/nginx.conf on loopback in front of two app processes: a class splits evenly, every session stays on its
replica.

The replicas are `streamlit run` from the repository root (the shipped .streamlit/config.toml), nginx runs the
very file we ship (only the listen port, the upstream ports and the log folder are substituted) inside a
throw-away main config under tmp_path, with two worker processes (as `worker_processes auto` gives on two cores).
Proof, four ways:
- plain HTTP: 40 cookie-less clients (all from 127.0.0.1, like a class behind one NAT) take turns over the two
  replicas (20/20) and each gets a `moe_route` cookie naming its replica; with it, each keeps landing there; a
  cookie that names no replica is a first visit, never a destination;
- a dead replica: its students land on the other one, whose name their cookie then carries;
- a real browser: for each of 5 sessions (one with a cookie that names no replica), every HTTP response it
  receives names the same replica (X-Upstream), its model state carries across actions (Step 1, 2, 3), and a CSV
  upload — a PUT that only the replica holding the session can accept — works;
- nginx's access log: all of a session's requests, the /_stcore/stream WebSocket and the upload included, went
  to one upstream address; and the sessions used both replicas.

Skips when nginx or chromium is missing, unless MOE_REQUIRE_NGINX=1 / MOE_REQUIRE_BROWSER=1 (CI sets both).
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                       if os.access(p, os.X_OK)), None)
COOKIE = "moe_route"
REPLICA_NAMES = {"r1", "r2"}  # the values of moe_route that name a replica
TIMEOUT = 60_000

pytestmark = pytest.mark.e2e


def _e2e_helpers():
    name = "_moe_e2e_helpers"  # the same helpers the browser tests and benchmarks/bench_classroom.py use
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "e2e" / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


helpers = _e2e_helpers()


def _need(tool: str, found, env: str, how: str) -> None:
    if found:
        return
    if os.environ.get(env) == "1":
        pytest.fail(f"{env}=1 but {tool} is not installed: {how}")
    pytest.skip(f"{tool} is not installed ({how}); set {env}=1 to make this a failure")


SHIPPED_PORTS = (8501, 8502)  # the example replicas in deploy/nginx.conf


def render_config(upstream_ports: list[int], listen_port: int, logs: Path) -> str:
    """deploy/nginx.conf with the loopback ports and a private log folder; nothing else changes."""
    text = CONF.read_text()
    for shipped, port in zip(SHIPPED_PORTS, upstream_ports, strict=True):
        # the first-visit line, its own upstream, the other replica's backup line and the `$moe_answered` map
        text, n = re.subn(rf"(127\\?\.0\\?\.0\\?\.1:){shipped}\b", rf"\g<1>{port}", text)
        assert n == 4, f"deploy/nginx.conf names replica 127.0.0.1:{shipped} in four places, found {n}"
    text, n = re.subn(r"^(\s*)listen 80;", rf"\g<1>listen 127.0.0.1:{listen_port};", text, flags=re.M)
    assert n == 1
    return text.replace("/var/log/nginx/", f"{logs}/")


def main_config(tmp: Path, site: Path) -> str:
    temps = "\n".join(f"  {kind}_temp_path {tmp}/{kind};" for kind in
                      ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # root's nginx would otherwise run its workers as nobody, who cannot use pytest's private tmp folder
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (f"{user}worker_processes 2;\nerror_log {tmp}/error.log info;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n{temps}\n  include {site};\n}}\n")


def wait_port(port: int, proc: subprocess.Popen, log: Path, seconds: float = 15) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}:\n{log.read_text() if log.exists() else ''}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/_stcore/health")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("nginx did not answer on its port")


@contextlib.contextmanager
def nginx_in_front(upstream_ports: list[int], tmp: Path):
    """The shipped config, rendered for these replica ports, served by nginx on a free loopback port."""
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp / kind).mkdir(exist_ok=True)
    listen = helpers.free_port()
    site = tmp / "moe-playground.conf"
    site.write_text(render_config(upstream_ports, listen, tmp))
    main = tmp / "nginx.conf"
    main.write_text(main_config(tmp, site))
    cmd = [NGINX, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(main),
           "-g", f"daemon off; pid {tmp}/nginx.pid;"]
    check = subprocess.run([*cmd[:-2], "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    nginx = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port(listen, nginx, tmp / "error.log")
        yield listen
    finally:
        os.killpg(nginx.pid, signal.SIGQUIT)  # graceful: flushes the access log
        try:
            nginx.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(nginx.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    _need("nginx", NGINX, "MOE_REQUIRE_NGINX", "apt-get install nginx")
    tmp = tmp_path_factory.mktemp("nginx")
    ports = [helpers.free_port(), helpers.free_port()]
    replicas = [helpers.start_app(p, log_path=tmp / f"replica-{p}.log") for p in ports]
    try:
        with nginx_in_front(ports, tmp) as listen:
            yield {"url": f"http://127.0.0.1:{listen}", "port": listen, "ports": ports,
                   "replicas": {f"127.0.0.1:{p}" for p in ports},
                   "access_log": tmp / "moe-playground.access.log", "tmp": tmp}
    finally:
        for r in replicas:
            helpers.stop_app(r)


def get(port: int, path: str = "/", cookie: str | None = None) -> tuple[int, str, str | None]:
    """(status, X-Upstream, the moe_route value nginx set, if it set one)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path, headers={"Cookie": f"{COOKIE}={cookie}"} if cookie is not None else {})
    resp = conn.getresponse()
    resp.read()
    set_cookie = next((v for k, v in resp.getheaders() if k.lower() == "set-cookie" and v.startswith(COOKIE)), None)
    value = set_cookie.split(";")[0].split("=", 1)[1] if set_cookie else None
    conn.close()
    return resp.status, resp.getheader("X-Upstream"), value


def log_routes(access_log: Path) -> dict[str, list[tuple[str, str]]]:
    """route cookie -> [(request line, upstream address)] from the access log (log_format moe_upstream)."""
    routes: dict[str, list[tuple[str, str]]] = defaultdict(list)
    pattern = re.compile(r'"(?P<req>[^"]*)" (?P<status>\d+) route=(?P<route>\S+) upstream=(?P<up>\S+)')
    for line in access_log.read_text().splitlines():
        m = pattern.search(line)
        if m:
            routes[m["route"]].append((m["req"], m["up"]))
    return routes


def first_visits(stack, n: int = 40) -> list[tuple[str, str]]:
    """n cookie-less clients, all from 127.0.0.1: [(cookie nginx set, replica that answered)]."""
    first = []
    for _ in range(n):
        status, upstream, cookie = get(stack["port"])
        assert status == 200 and upstream in stack["replicas"], (status, upstream)
        assert cookie in REPLICA_NAMES, f"nginx sets a {COOKIE} cookie that names a replica, not {cookie!r}"
        first.append((cookie, upstream))
    return first


def test_a_class_behind_one_address_splits_evenly_and_each_client_keeps_its_replica(stack):
    first = first_visits(stack)  # 40 students, one public address: the turns, not the address, spread them
    per_replica = Counter(upstream for _, upstream in first)
    assert set(per_replica) == stack["replicas"], "the class is spread over both replicas"
    assert max(per_replica.values()) - min(per_replica.values()) <= 1, f"first visits take turns: {per_replica}"
    named = {cookie: {up for c, up in first if c == cookie} for cookie, _ in first}
    assert all(len(ups) == 1 for ups in named.values()) and len(named) == 2, f"one name per replica: {named}"
    for cookie, upstream in first[:10]:
        for path in ("/", "/_stcore/health", "/_stcore/host-config"):
            status, again, new_cookie = get(stack["port"], path, cookie)
            assert again == upstream, f"{path} with {COOKIE}={cookie} went to {again}, not {upstream}"
            assert new_cookie is None, "a client that has the cookie keeps it"


@pytest.mark.parametrize("forged", ["r3", "127.0.0.1:22", "../../etc/passwd", "r1x", "moe_r1", ""])
def test_a_cookie_that_names_no_replica_is_a_first_visit(stack, forged):
    status, upstream, cookie = get(stack["port"], "/", forged)
    assert status == 200 and upstream in stack["replicas"], (status, upstream)
    assert cookie in REPLICA_NAMES, f"{COOKIE}={forged!r} is replaced by a replica's name, got {cookie!r}"
    assert get(stack["port"], "/", cookie)[1] == upstream, "and the new cookie keeps the client there"


def test_a_dead_replicas_students_move_to_the_other_and_stay_there(stack, tmp_path):
    live, dead = stack["ports"][0], helpers.free_port()  # nothing listens on `dead`
    with nginx_in_front([live, dead], tmp_path) as port:
        for cookie in ("r2", None, None, "r1"):  # r2 is the dead replica's name
            status, upstream, new_cookie = get(port, "/", cookie)
            assert status == 200 and upstream.endswith(f"127.0.0.1:{live}"), (cookie, status, upstream)
            if cookie == "r1":
                assert new_cookie is None, "students of the live replica keep their cookie"
            else:
                assert new_cookie == "r1", f"the cookie follows the replica that answered, got {new_cookie!r}"


CSV = "x,y,label\n" + "".join(f"{(i % 7) / 7:.3f},{(i % 5) / 5:.3f},{i % 2}\n" for i in range(40))


def test_browser_sessions_stay_on_their_replica(stack, playwright):
    from playwright.sync_api import expect

    _need("chromium", helpers.CHROMIUM, "MOE_REQUIRE_BROWSER", "apt-get install chromium")
    cookie_for = {up: c for c, up in first_visits(stack)}  # a known cookie for each replica
    assert len(cookie_for) == 2
    browser = playwright.chromium.launch(executable_path=helpers.CHROMIUM, args=helpers.CHROMIUM_ARGS)
    seen: list[dict] = []
    try:
        # Two sessions arrive with the cookie of replica A resp. B (so both replicas certainly serve a browser);
        # two arrive without one and get theirs from nginx, and one with a cookie that names no replica.
        preset = sorted(cookie_for.values()) + [None, None, "r9"]
        for i, cookie in enumerate(preset):
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            if cookie:
                context.add_cookies([{"name": COOKIE, "value": cookie, "url": stack["url"]}])
            page = context.new_page()
            upstreams: list[tuple[str, str]] = []
            page.on("response", lambda r, ups=upstreams: ups.append((r.url, r.headers.get("x-upstream"))))
            page.goto(stack["url"])
            label = page.get_by_test_id("stMetricLabel").filter(has_text=re.compile(r"^Step$"))
            step = page.get_by_test_id("stMetric").filter(has=label).get_by_test_id("stMetricValue").first
            expect(step).to_have_text("0", timeout=TIMEOUT)
            for n in (1, 2, 3):  # the model lives in one process: the counter continues
                page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=TIMEOUT)
                page.get_by_role("button", name="Step", exact=True).click()
                expect(step).to_have_text(str(n), timeout=TIMEOUT)
            page.get_by_text("Your own points (CSV)").click()
            page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(
                files=[{"name": "points.csv", "mimeType": "text/csv", "buffer": CSV.encode()}])
            expect(page.get_by_text("Training on your 40 points.")).to_be_visible(timeout=TIMEOUT)
            route = next(c["value"] for c in context.cookies() if c["name"] == COOKIE)
            if cookie in REPLICA_NAMES:
                assert route == cookie, "nginx keeps a cookie the browser already has"
            else:
                assert route in REPLICA_NAMES, f"nginx gives a replica's cookie, not {route!r}"
            context.close()  # closes the WebSocket: nginx logs it now
            seen.append({"session": i, "route": route, "upstreams": upstreams})
    finally:
        browser.close()

    for s in seen:
        named = {up for url, up in s["upstreams"] if url.startswith(stack["url"]) and up}
        assert len(named) == 1, f"session {s['session']}: responses came from {named}"
        s["replica"] = named.pop()
        assert s["replica"] in stack["replicas"]
    assert {s["replica"] for s in seen} == stack["replicas"], "the browser sessions used both replicas"

    deadline = time.time() + 10  # the WebSocket lines are written when the connections close
    while True:
        routes = log_routes(stack["access_log"])
        if all(any("/_stcore/stream" in req for req, _ in routes.get(s["route"], [])) for s in seen):
            break
        assert time.time() < deadline, "every session's WebSocket appears in the access log"
        time.sleep(0.2)
    for s in seen:
        lines = routes[s["route"]]
        assert {up for _, up in lines} == {s["replica"]}, f"session {s['session']}: {lines}"
        kinds = [req.split()[1].split("?")[0] for req, _ in lines]
        assert "/_stcore/stream" in kinds, "the WebSocket went through nginx"
        assert any(k.startswith("/_stcore/upload_file/") for k in kinds), "so did the upload, to the same replica"
