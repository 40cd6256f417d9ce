"""launch: run fn(rank, world_size, ...) on N local processes joined in one process group.

gloo on CPUs (nccl for CUDA ranks), with a timeout on every collective and a deadline on the whole run. A rank
that raises takes the group down, and EPLaunchError names the first rank that failed for a reason of its own
rather than the peers that only lost it. Used by ep-bench (moe_core/scale_out/ep_bench.py), the tests of
moe_core.scale_out.distributed and lesson 8.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException, ProcessExitedException


class EPLaunchError(RuntimeError):
    """A rank failed, or the group ran past its deadline. The message names the rank and its error."""


def launch(
    fn: Callable[..., Any],
    world_size: int,
    args: tuple = (),
    backend: str = "gloo",
    timeout_s: float = 60.0,  # process-group timeout: init and every collective
    deadline_s: float = 600.0,  # the whole run
    threads: int | None = None,  # intra-op threads per rank; None = the CPUs shared out, at least 1
) -> list[Any]:
    """Run fn(rank, world_size, *args) in world_size local processes joined in one process group.

    Returns fn's results by rank. fn and args must be picklable (module-level). Processes start from a
    forkserver that imported torch once (fast: ~0.1 s per launch after the first), or spawn where there is
    no forkserver. If a rank raises, torch stops the others and EPLaunchError names the first rank that
    failed for a reason of its own (not a peer's disappearance); a collective that waits longer than
    timeout_s raises in the waiting rank, and after deadline_s every rank still running is stopped.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world size {world_size!r} is invalid: it must be a positive integer")
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    if method == "forkserver":  # only takes effect before the forkserver's first start
        mp.set_forkserver_preload(["torch", "torch.distributed", "pandas", "moe_core.scale_out.distributed"])
    with tempfile.TemporaryDirectory(prefix="ep-launch-") as tmp, _without_main_module():
        ctx = mp.start_processes(
            _run_rank, args=(world_size, tmp, backend, timeout_s, threads, fn, args), nprocs=world_size, join=False,
            start_method=method,
        )
        deadline = time.monotonic() + deadline_s
        spawn_log = logging.getLogger("torch.multiprocessing.spawn")
        level = spawn_log.level
        spawn_log.setLevel(logging.ERROR)  # not "Terminating process ..." on a failure: our error names the rank
        try:
            while not ctx.join(timeout=0.1):
                if time.monotonic() > deadline:
                    alive = [r for r, p in enumerate(ctx.processes) if p.is_alive()]
                    raise EPLaunchError(
                        f"the process group did not finish within {deadline_s:g} s; {_ranks(alive)} "
                        f"{'was' if len(alive) == 1 else 'were'} still running and stopped"
                    )
        except ProcessException as e:
            # give the other ranks a moment to finish and write their own reports: the rank that raised may
            # be a little slower to report than a peer that noticed its socket close
            settle = time.monotonic() + 5.0
            for p in ctx.processes:
                p.join(timeout=max(0.0, settle - time.monotonic()))
            raise EPLaunchError(_diagnose(tmp, world_size, timeout_s, e)) from None
        finally:  # on any way out (error, deadline, Ctrl-C) no rank outlives the launch
            _stop(ctx.processes)
            spawn_log.setLevel(level)
        return [torch.load(os.path.join(tmp, f"result{r}.pt"), weights_only=False) for r in range(world_size)]


@contextlib.contextmanager
def _without_main_module():
    """Start ranks without re-running the parent's __main__ in them. spawn/forkserver children import the
    parent's main script; when that is a Streamlit page, a notebook or a test runner's AppTest script it
    fails there (or does work twice). The ranks need only moe_core and fn's own module."""
    main = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")  # no __file__: nothing to re-run
    try:
        yield
    finally:
        if main is not None:
            sys.modules["__main__"] = main


def _run_rank(rank: int, world_size: int, tmp: str, backend: str, timeout_s: float, threads, fn, args) -> None:
    try:
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // world_size))
        if backend == "nccl":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        dist.init_process_group(
            backend, init_method="file://" + os.path.join(tmp, "store"), rank=rank, world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
        try:
            result = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        torch.save(result, os.path.join(tmp, f"result{rank}.pt"))
    except BaseException as e:
        report = dict(
            rank=rank, time=time.time(), error=f"{type(e).__name__}: {_first_line(str(e))}",
            peer=isinstance(e, dist.DistError) or "gloo" in str(e).lower() or "nccl" in str(e).lower(),
            traceback=traceback.format_exc(),
        )
        with open(os.path.join(tmp, f"error{rank}.json"), "w") as f:
            json.dump(report, f)
        raise


def _first_line(msg: str, limit: int = 300) -> str:
    line = next((s.strip() for s in msg.splitlines() if s.strip()), "")
    line = re.sub(r"^\[[^\]]*\]\s*", "", line)  # gloo's "[/path/to/file.cc:78] " prefix
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _diagnose(tmp: str, world_size: int, timeout_s: float, e: ProcessException) -> str:
    reports = []
    for r in range(world_size):
        path = os.path.join(tmp, f"error{r}.json")
        if os.path.exists(path):
            with open(path) as f:
                reports.append(json.load(f))
    if not reports:  # killed by a signal or os._exit: no Python error to show
        how = f"exit code {e.exit_code}" if isinstance(e, ProcessExitedException) else _first_line(str(e))
        return f"rank {e.error_index} of {world_size} died ({how})"
    reports.sort(key=lambda rep: (rep["peer"], rep["time"]))  # an error of its own first, then the earliest
    root = reports[0]
    silent = sorted(set(range(world_size)) - {rep["rank"] for rep in reports if rep["peer"]} - {root["rank"]})
    if root["peer"] and silent:  # nobody failed on its own: someone stopped answering
        return (f"{_ranks(silent)} stopped responding: rank {root['rank']} of {world_size} gave up waiting "
                f"(timeout {timeout_s:g} s): {root['error']}")
    where = " in a collective (a peer left it or never came)" if root["peer"] else ""
    msg = f"rank {root['rank']} of {world_size} failed{where}: {root['error']}"
    own = sorted(rep["rank"] for rep in reports[1:] if not rep["peer"])
    lost = sorted(rep["rank"] for rep in reports[1:] if rep["peer"])
    if own:
        msg += f"; {_ranks(own)} failed too"
    if lost:
        msg += f"; {_ranks(lost)} then lost {'their' if len(lost) > 1 else 'its'} peers"
    return msg


def _ranks(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else "ranks " + ", ".join(map(str, ranks))


def _stop(processes) -> None:
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
