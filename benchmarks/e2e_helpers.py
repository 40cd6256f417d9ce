"""The browser tests' helpers (tests/e2e/conftest.py: start_app, stop_app, free_port, CHROMIUM, CHROMIUM_ARGS),
loaded once for the benchmarks that drive a real server and browser: one source for how the app is started."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
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


def _nginx_test():
    """tests/deploy/test_nginx_sticky.py: one source for how the shipped deploy/nginx.conf is rendered on loopback."""
    name = "_moe_nginx_sticky"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "deploy" / "test_nginx_sticky.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@contextlib.contextmanager
def nginx_stack(replicas: int = 2, pin: bool = True):
    """Two app processes behind the shipped deploy/nginx.conf (only ports and log folder substituted), as
    tests/deploy/test_nginx_sticky.py runs it: yields (nginx url, the replicas' Popen objects). pin: replica i
    runs on the i-th core this process may use, as docs/deploy.md starts them (`taskset -c`), when there is a
    core for each."""
    if replicas != 2:
        raise ValueError(f"the shipped deploy/nginx.conf names two replicas, so nginx_stack runs two, not {replicas}")
    h, t = load(), _nginx_test()
    if t.NGINX is None:
        raise SystemExit("nginx is not installed (apt-get install nginx)")
    cores = sorted(os.sched_getaffinity(0))
    pin = pin and len(cores) >= replicas
    with tempfile.TemporaryDirectory(prefix="moe-nginx-") as tmp_name:
        tmp = Path(tmp_name)
        ports = [h.free_port() for _ in range(replicas)]
        procs = []
        try:
            for i, port in enumerate(ports):
                procs.append(h.start_app(port, log_path=tmp / f"replica-{port}.log", cpu=cores[i] if pin else None))
            with t.nginx_in_front(ports, tmp) as listen:
                yield f"http://127.0.0.1:{listen}", procs
        finally:
            for proc in procs:
                h.stop_app(proc)
