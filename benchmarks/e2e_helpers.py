"""The browser tests' helpers (tests/e2e/conftest.py: start_app, stop_app, free_port, CHROMIUM, CHROMIUM_ARGS),
loaded once for the benchmarks that drive a real server and browser: one source for how the app is started."""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
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
def nginx_stack(replicas: int = 2):
    """`replicas` app processes behind the shipped deploy/nginx.conf (only ports and log folder substituted),
    as tests/deploy/test_nginx_sticky.py runs it: yields (nginx url, the replicas' Popen objects)."""
    if replicas < 2:
        raise ValueError("the shipped config lists two replicas: nginx_stack needs at least 2")
    h, t = load(), _nginx_test()
    if t.NGINX is None:
        raise SystemExit("nginx is not installed (apt-get install nginx)")
    with tempfile.TemporaryDirectory(prefix="moe-nginx-") as tmp_name:
        tmp = Path(tmp_name)
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (tmp / kind).mkdir()
        ports = [h.free_port() for _ in range(replicas)]
        procs = [h.start_app(p, log_path=tmp / f"replica-{p}.log") for p in ports]
        try:
            listen = h.free_port()
            site = tmp / "moe-playground.conf"
            text = t.render_config(ports[:2], listen, tmp)
            extra = "".join(f"    server 127.0.0.1:{p} max_fails=2 fail_timeout=10s;\n" for p in ports[2:])
            site.write_text(text.replace("fail_timeout=10s;\n}", "fail_timeout=10s;\n" + extra + "}", 1)
                            if extra else text)
            main = tmp / "nginx.conf"
            main.write_text(t.main_config(tmp, site))
            cmd = [t.NGINX, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(main),
                   "-g", f"daemon off; pid {tmp}/nginx.pid;"]
            nginx = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                t.wait_port(listen, nginx, tmp / "error.log")
                yield f"http://127.0.0.1:{listen}", procs
            finally:
                nginx.terminate()
                nginx.wait(10)
        finally:
            for proc in procs:
                h.stop_app(proc)
