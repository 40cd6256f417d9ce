"""Small C kernels for the CPU, compiled on first use with the system's C compiler and called through ctypes.

Why: at the Playground's sizes (256 tokens, 8 experts) an MoE layer written as tensor ops is ~60 small ops and
several autograd nodes each way, and each op costs more in dispatch (~5 us) than in arithmetic; at bench sizes
(4096 tokens) the experts' elementwise steps are passes over arrays bigger than the cache.
  route.c    the softmax top-k router, its losses and the sort by expert, one call each way (routers/fused.py)
  swiglu.c   the experts' SwiGLU activation in one pass each way (experts.py)
  rows.c     the token rows to and from the experts, the gate multiply and its gradient folded in (dispatch.py)
  experts.c  a small matmul, and the whole expert step (gather, matmuls, activation, gated scatter) per call
             (dispatch.NativeExperts)
  layer.c    the whole softmax top-k layer: router matmul, routing, capacity, experts (fused_layer.py)
kernels.h declares what one file calls from another; vector_math.h holds the vectorizable exp and HOT (one build
per x86 vector width, picked at load time).

Nothing here is required. Without a C compiler (or with MOE_PLAYGROUND_NATIVE=0) `kernels()` returns None and
the layer runs torch ops instead; both paths are tested against the same per-token reference.
The library is built once per source version and compiler into a cache folder (MOE_PLAYGROUND_CACHE, else
$XDG_CACHE_HOME/moe-playground, else ~/.cache/moe-playground), written to a temporary name and renamed into
place, so that several server processes starting together never load a half-written file.
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
                "moe_experts_abi_version": 1, "moe_layer_abi_version": 1}
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
        fwd = getattr(lib, f"moe_route_forward_{suffix}")
        fwd.argtypes = [p, i64, i64, i64, c_int, p, p, p, p, p, p, p, p, p, p, p]
        fwd.restype = c_int
        bwd = getattr(lib, f"moe_route_backward_{suffix}")
        bwd.argtypes = [p, p, p, p, p, p, p, p, i64, i64, i64, c_int, dbl, dbl, p]
        bwd.restype = c_int
        getattr(lib, f"moe_swiglu_forward_{suffix}").argtypes = [p, i64, i64, p]  # h, R, H, act
        getattr(lib, f"moe_swiglu_backward_{suffix}").argtypes = [p, p, i64, i64, p]  # da, h, R, H, dh
        getattr(lib, f"moe_gather_rows_{suffix}").argtypes = [p, p, i64, i64, p]  # src, idx, n, d, out
        # rows, scale, idx, n, d, accumulate, out
        getattr(lib, f"moe_scatter_rows_{suffix}").argtypes = [p, p, p, i64, i64, c_int, p]
        # dy, idx, n, d, rows, scale, out, d_scale
        getattr(lib, f"moe_gather_rows_grad_{suffix}").argtypes = [p, p, i64, i64, p, p, p, p]
        # M, N, K, a, a_row, a_col, b, ldb, c, ldc, accumulate
        getattr(lib, f"moe_gemm_{suffix}").argtypes = [i64, i64, i64, p, i64, i64, p, i64, p, i64, c_int]
        experts_fwd = getattr(lib, f"moe_experts_forward_{suffix}")
        # x, T, d, h, E, counts, token_order, gates, w_in, w_out, accumulate, y, xs, hs, acts, ys
        experts_fwd.argtypes = [p, i64, i64, i64, i64, p, p, p, p, p, c_int, p, p, p, p, p]
        experts_fwd.restype = c_int
        experts_bwd = getattr(lib, f"moe_experts_backward_{suffix}")
        # dy, T, d, h, E, counts, token_order, gates, w_in, w_out, accumulate, xs, hs, acts, ys, dx, d_gates,
        # dw_in, dw_out
        experts_bwd.argtypes = [p, i64, i64, i64, i64, p, p, p, p, p, c_int, p, p, p, p, p, p, p, p]
        experts_bwd.restype = c_int
        layer_fwd = getattr(lib, f"moe_layer_forward_{suffix}")
        # x, xr, T, d, h, E, k, normalize, capacity, unit_gates, w_router, w_in, w_out, aux_coef, z_coef, then 21
        # output arrays (y ... ys)
        layer_fwd.argtypes = [p, p, i64, i64, i64, i64, i64, c_int, i64, c_int, p, p, p, dbl, dbl] + [p] * 21
        layer_fwd.restype = c_int
        layer_bwd = getattr(lib, f"moe_layer_backward_{suffix}")
        # dy, d_load_balance, d_z, xr, T, d, h, E, k, normalize, capacity, unit_gates, 12 saved arrays (w_router ...
        # gates_kept), xs, hs, acts, ys, dx, dxr, dw_router, dw_in, dw_out
        layer_bwd.argtypes = [p, dbl, dbl, p, i64, i64, i64, i64, i64, c_int, i64, c_int] + [p] * 21
        layer_bwd.restype = c_int
        for name in ("swiglu_forward", "swiglu_backward", "gather_rows", "scatter_rows", "gather_rows_grad", "gemm"):
            getattr(lib, f"moe_{name}_{suffix}").restype = None
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


def for_tensors(t: torch.Tensor, *others: torch.Tensor | None, index: torch.Tensor | None = None,
                matmul: bool = False):
    """The kernels, if they are built and fit these tensors: t and the others contiguous CPU float32/float64
    of one dtype, index (if given) contiguous int64; with matmul, only where the C matmul is built for the
    CPU's vector units (moe_gemm_vectorized). Else None, and the caller runs torch ops."""
    if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64) or not t.is_contiguous():
        return None
    for o in others:
        if o is not None and (o.dtype != t.dtype or o.device != t.device or not o.is_contiguous()):
            return None
    if index is not None and (index.dtype != torch.long or not index.is_contiguous()):
        return None
    lib = kernels()
    if matmul and lib is not None and not _gemm_vectorized(lib):
        return None
    return lib


@cache
def _gemm_vectorized(lib: ctypes.CDLL) -> bool:
    return bool(lib.moe_gemm_vectorized())


def function(lib: ctypes.CDLL, name: str, dtype: torch.dtype):
    """The float32 or float64 version of kernel `name` (moe_<name>_f32 / _f64)."""
    return getattr(lib, f"moe_{name}_{'f32' if dtype == torch.float32 else 'f64'}")


def ptr(t: torch.Tensor | None) -> int | None:
    """A tensor's address for a kernel argument; None (NULL) for an absent optional one."""
    return None if t is None else t.data_ptr()
