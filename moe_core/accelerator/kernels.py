"""The accelerator's C kernels, compiled on first use with the system's C compiler and called through ctypes.

  layer.c    the whole softmax top-k layer, forward and backward (fused_layer.py calls it); it uses:
  route.c    softmax, top-k, renormalization, the balance and z losses, and the sort of the pairs by expert
  experts.c  a small matmul, and the expert step (gather, matmuls, activation, gated scatter)
  swiglu.c   the SwiGLU activation in one pass each way
  rows.c     token rows to and from the experts, with the gate multiply and its gradient folded in
kernels.h declares what one file calls from another; vector_math.h holds the vectorizable exp and HOT (one build
per x86 vector width, picked at load time).

Nothing here is required: without a C compiler, or with MOE_PLAYGROUND_NATIVE=0, `kernels()` returns None and
MoELayer runs its readable torch code. The library is built once per source version and compiler into a cache
folder (MOE_PLAYGROUND_CACHE, else $XDG_CACHE_HOME/moe-playground, else ~/.cache/moe-playground), written to a
temporary name and renamed into place, so that several server processes starting together never load a
half-written file.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from functools import cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

HERE = Path(__file__).parent / "native"  # the C sources
SOURCES = [HERE / "route.c", HERE / "swiglu.c", HERE / "rows.c", HERE / "experts.c",
           HERE / "layer.c"]
HEADERS = [HERE / "vector_math.h", HERE / "kernels.h"]
# each source file reports its version: bump it with a signature change
ABI_VERSIONS = {"moe_route_abi_version": 2, "moe_swiglu_abi_version": 1, "moe_rows_abi_version": 1,
                "moe_experts_abi_version": 1, "moe_layer_abi_version": 2}
COMPILE_FLAGS = ["-O3", "-std=c99", "-fPIC", "-fno-math-errno", "-fno-trapping-math"]
LINK_FLAGS = ["-shared", "-fPIC"]
COMPILE_TIMEOUT_S = 120
_BUILD_LOCK = threading.Lock()  # a class's first steps start together: one compile, the others wait and load it



_OFF = frozenset({"0", "false", "no", "off"})


def enabled() -> bool:
    """False when the environment turns the kernels off (MOE_PLAYGROUND_NATIVE=0). Read on every call (a few
    times per step; tests flip it), so the common case, the variable not set, is one dict lookup."""
    value = os.environ.get("MOE_PLAYGROUND_NATIVE")
    return value is None or value.strip().lower() not in _OFF


def cache_dir() -> Path:
    explicit = os.environ.get("MOE_PLAYGROUND_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "moe-playground"


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")


def build(compiler: str, out_dir: Path) -> Path:
    """Compile the kernels into out_dir (if not there yet) and return the library's path. Raises on failure."""
    source = b"".join(path.read_bytes() for path in SOURCES + HEADERS)
    key = hashlib.sha256(
        source + repr((COMPILE_FLAGS, LINK_FLAGS, compiler, platform.machine(), platform.system())).encode()
    ).hexdigest()[:16]
    suffix = ".dll" if platform.system() == "Windows" else ".so"
    target = out_dir / f"moe_kernels_{key}{suffix}"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=suffix + ".tmp", dir=out_dir)
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory(prefix=target.stem + ".", dir=out_dir) as objects:
            # one compiler per source file, all at once (the files take 0.4-1.1 s each), then one link
            outputs = [os.path.join(objects, f"{path.stem}.o") for path in SOURCES]
            _run_all(compiler, [[*COMPILE_FLAGS, "-c", "-o", obj, str(path)] for path, obj in
                                zip(SOURCES, outputs, strict=True)])
            _run_all(compiler, [[*LINK_FLAGS, "-o", tmp, *outputs, "-lm"]])
        os.replace(tmp, target)  # atomic: another process sees the old state or the whole file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def _run_all(compiler: str, argument_lists: list[list[str]]) -> None:
    """Run the compiler once per argument list, in parallel; raise RuntimeError with the first failure's output."""
    procs = [subprocess.Popen([compiler, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for args in argument_lists]
    failures = []
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=COMPILE_TIMEOUT_S)
            if proc.returncode != 0:
                failures.append(err.strip())
    finally:
        for proc in procs:  # after a timeout: stop the others too
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if failures:
        raise RuntimeError(f"{compiler} failed: {failures[0][:500]}")


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    for name, version in ABI_VERSIONS.items():
        if getattr(lib, name)() != version:
            raise RuntimeError(f"{path}: {name}() is {getattr(lib, name)()}, expected {version}")
    p, i64, c_int, dbl = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
    for suffix in ("f32", "f64"):
        layer_fwd = getattr(lib, f"moe_layer_forward_{suffix}")
        # x, xr, T, d, h, E, k, normalize, capacity, unit_gates, w_router, w_in, w_out, aux_coef, z_coef, then 20
        # output arrays (y ... ys)
        layer_fwd.argtypes = [p, p, i64, i64, i64, i64, i64, c_int, i64, c_int, p, p, p, dbl, dbl] + [p] * 20
        layer_fwd.restype = c_int
        layer_bwd = getattr(lib, f"moe_layer_backward_{suffix}")
        # dy, d_load_balance, d_z, xr, T, d, h, E, k, normalize, capacity, unit_gates, 12 saved arrays (w_router ...
        # gates_kept), xs, hs, acts, ys, dx, dxr, dw_router, dw_in, dw_out
        layer_bwd.argtypes = [p, dbl, dbl, p, i64, i64, i64, i64, i64, c_int, i64, c_int] + [p] * 21
        layer_bwd.restype = c_int
    return lib


def kernels() -> ctypes.CDLL | None:
    """The compiled kernels, built on the first call; None if they are off or cannot be built."""
    return _kernels() if enabled() else None


@cache  # one build per process: the library is a pure function of the sources, shared like an import
def _kernels() -> ctypes.CDLL | None:
    compiler = _compiler()
    if compiler is None:
        log.info("no C compiler found: the MoE layer uses torch ops only (set CC to use one)")
        return None
    with _BUILD_LOCK:
        for folder in (cache_dir(), Path(tempfile.gettempdir()) / "moe-playground"):
            try:
                return _load(build(compiler, folder))
            except (OSError, RuntimeError, subprocess.SubprocessError) as err:
                log.warning("could not build the C kernels in %s (%s); using torch ops", folder, err)
    return None


def for_tensors(t: torch.Tensor, *others: torch.Tensor) -> ctypes.CDLL | None:
    """The kernels, if they are built, fit these tensors (t and the others contiguous CPU float32/float64 of one
    dtype) and the C matmul is built for this CPU's vector units (moe_gemm_vectorized). Else None."""
    if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64) or not t.is_contiguous():
        return None
    if any(o.dtype != t.dtype or o.device != t.device or not o.is_contiguous() for o in others):
        return None
    lib = kernels()
    return lib if lib is not None and _gemm_vectorized(lib) else None


@cache
def _gemm_vectorized(lib: ctypes.CDLL) -> bool:
    return bool(lib.moe_gemm_vectorized())


def function(lib: ctypes.CDLL, name: str, dtype: torch.dtype):
    """The float32 or float64 version of kernel `name` (moe_<name>_f32 / _f64)."""
    return getattr(lib, f"moe_{name}_{'f32' if dtype == torch.float32 else 'f64'}")


def ptr(t: torch.Tensor | None) -> int | None:
    """A tensor's address for a kernel argument; None (NULL) for an absent optional one."""
    return None if t is None else t.data_ptr()
