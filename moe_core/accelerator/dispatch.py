"""Dispatch, SwiGLU experts and combine as one autograd Function, run in cache-sized row chunks.

    y[t] = sum over kept pairs n of token t:  w_n * FFN_{e(n)}(x[t]),   FFN_e(x) = (silu(x Wg_e) * (x Wu_e)) Wd_e

The pairs arrive sorted by expert (capacity.assign_slots). Written out with autograd ops this is
index_select -> grouped matmul -> swiglu -> grouped matmul -> gate multiply -> index_add, and every op streams
a whole (N, .) tensor through memory, forward and backward. On the 2-core CPUs this project runs on, a
(8192, 256) float32 intermediate (8 MB) does not fit in a core's L2 (2 MB), and elementwise ops on it ran
about 3x slower per element than on a 1024-row block (benchmarks/README.md). So we walk the sorted rows in
chunks of at most CHUNK_ROWS (when there are more than UNCHUNKED_ROWS) and do every step of one chunk while it
is in cache, in the forward and in a hand-written backward. The same trick (tile the expert MLP, fuse gather and
scatter into it) is what MegaBlocks (Gale et al. 2022, arXiv:2211.15841) and ScatterMoE (Tan et al. 2024,
arXiv:2403.08245) do on GPUs.

A chunk is either a piece of one expert's rows (plain mm, weight grads accumulated with addmm) or a run of
whole small experts (one grouped_mm when the dtype/device allow it, else a loop of mm). Chunks are planned on
the host from the per-expert counts (one device sync; free on a CPU). On CUDA there is no chunking
(CHUNK_ROWS_CUDA = no limit): the GPU has no such cache cliff, and fewer launches win there.

The SwiGLU activation runs in one C pass each way on a CPU (native/swiglu.c, compiled on first use; torch's
silu and mul otherwise). Top-1 with renormalized gates (every gate exactly 1) skips the gate multiply and its
gradient; top-1 with nothing dropped copies rows back (index_copy) instead of zero-filling and adding.

Saved for backward, per chunk: the gathered rows of x (R, d), the pre-activation [gate | up] (R, 2h), the
activation (R, h), silu(gate) (R, h) on the torch path only (the C backward recomputes the sigmoid: one exp per
element is cheaper than another pass over memory), and the un-gated expert output (R, d) when there is a gate
gradient to compute. Not twice differentiable.

On a CPU with the C kernels built, dispatch_experts_combine runs NativeExperts instead: the same steps, the
matmuls included, as one C call each way (native/experts.c), as long as an expert's W_in has at most
EXPERT_WEIGHTS_LIMIT entries (beyond that MKL's blocked matmul wins and DispatchExpertsCombine runs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from moe_core.accelerator import kernels as native
from moe_core.layer.experts import swiglu_backward, swiglu_forward

CHUNK_ROWS = 1024  # rows per chunk on a CPU: h (1024, 2*128) float32 is 1 MB, half an L2
UNCHUNKED_ROWS = 4096  # up to this many rows in all, one chunk: each extra chunk costs ~0.2 ms of Python and
# ~25 more small ops, and in benchmarks/README.md splitting 4096 rows never paid for that; 8192 rows did
CHUNK_ROWS_CUDA = 1 << 62  # i.e. no chunking on a GPU
EXPERT_WEIGHTS_LIMIT = 1 << 18  # d * 2h up to which a CPU runs the experts in C (native/experts.c): a 1 MB float32
# W_in[e] and the blocks stay in L2; beyond it MKL's blocked sgemm (the torch path) is the faster matmul

_HAS_GROUPED_MM = hasattr(F, "grouped_mm")


def plan_chunks(counts: list[int], max_rows: int) -> list[tuple[int, int, int, int]]:
    """(row_start, row_end, first_expert, end_expert) of each chunk, covering every non-empty expert.

    Whole experts are packed together while they fit in max_rows; a bigger expert is cut into near-equal
    pieces of at most max_rows (so a piece never mixes experts). Empty experts inside a pack are harmless.
    """
    chunks: list[tuple[int, int, int, int]] = []
    row, pack_row, pack_e = 0, 0, None
    for e, n in enumerate(counts):
        if n == 0:
            continue
        if pack_e is not None and row + n - pack_row > max_rows:  # close the open pack
            chunks.append((pack_row, row, pack_e, e))
            pack_e = None
        if n > max_rows:
            pieces = -(-n // max_rows)
            bounds = [row + n * i // pieces for i in range(pieces + 1)]
            chunks += [(a, b, e, e + 1) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        elif pack_e is None:
            pack_row, pack_e = row, e
        row += n
    if pack_e is not None:
        chunks.append((pack_row, row, pack_e, len(counts)))
    return chunks


def _grouped_ok(x: torch.Tensor, w_in: torch.Tensor) -> bool:
    # grouped_mm wants 16-byte aligned strides; on CUDA it also wants bf16 and SM80+ (the CPU kernel takes
    # float32). Elsewhere (float64 tests, other GPUs) a chunk of several experts runs as a loop of mm.
    if not _HAS_GROUPED_MM or x.dtype not in (torch.float32, torch.bfloat16):
        return False
    if x.device.type == "cuda":
        if x.dtype != torch.bfloat16 or torch.cuda.get_device_capability(x.device) < (8, 0):
            return False
    elif x.device.type != "cpu" or x.dtype != torch.float32:
        return False
    align = 16 // x.element_size()
    return w_in.shape[1] % align == 0 and w_in.shape[2] % (2 * align) == 0


def _work_items(counts: list[int], max_rows: int, grouped: bool, token_order: torch.Tensor):
    """The plan as work items (r0, r1, tokens, e0, e1, offs): offs is None for a piece of one expert (e1 = e0 + 1),
    else the group ends for grouped_mm; without grouped_mm a pack is split back into its experts."""
    items = []
    for r0, r1, e0, e1 in plan_chunks(counts, max_rows):
        if e1 - e0 == 1 or grouped:
            offs = None
            if e1 - e0 > 1:
                offs = torch.tensor(counts[e0:e1], dtype=torch.int32).cumsum(0, dtype=torch.int32)
                offs = offs.to(token_order.device)
            items.append((r0, r1, token_order[r0:r1], e0, e1, offs))
            continue
        row = r0
        for e in range(e0, e1):
            n = counts[e]
            if n:
                items.append((row, row + n, token_order[row : row + n], e, e + 1, None))
            row += n
    return items


class DispatchExpertsCombine(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gates, w_in, w_out, token_order, counts, max_rows, each_token_once):
        """x (T, d), gates (N,) per sorted pair or None (every gate is 1), w_in (E, d, 2h), w_out (E, h, d),
        token_order (N,) long, counts: python list of rows per expert (sum N), each_token_once: token_order is
        a permutation of all T tokens (top-1, nothing dropped), so rows are copied back instead of added.
        Returns y (T, d)."""
        items = _work_items(counts, max_rows, _grouped_ok(x, w_in), token_order)
        saved = []  # per item: x rows (R, d), [gate | up] (R, 2h), silu(gate) or None, activation (R, h), output
        y = (torch.empty if each_token_once else torch.zeros)(x.shape, dtype=x.dtype, device=x.device)  # (T, d)
        for r0, r1, tok, e0, e1, offs in items:
            xc = gather_rows(x, tok)  # (R, d)
            hc = xc @ w_in[e0] if offs is None else F.grouped_mm(xc, w_in[e0:e1], offs=offs)  # (R, 2h)
            act, sc = swiglu_forward(hc)  # (R, h) each; sc is None where the C kernel recomputes it in backward
            yc = act @ w_out[e0] if offs is None else F.grouped_mm(act, w_out[e0:e1], offs=offs)  # (R, d)
            scatter_rows(y, tok, yc, None if gates is None else gates[r0:r1], accumulate=not each_token_once)
            saved.append((xc, hc, sc, act, None if gates is None else yc))
        ctx.save_for_backward(gates, w_in, w_out)
        ctx.items, ctx.saved, ctx.x_shape, ctx.each_token_once = items, saved, x.shape, each_token_once
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        gates, w_in, w_out = ctx.saved_tensors
        need_x, need_g, need_win, need_wout = ctx.needs_input_grad[:4]
        dy = dy.contiguous()
        E = w_in.shape[0]
        if need_x:
            dx = dy.new_empty(ctx.x_shape) if ctx.each_token_once else dy.new_zeros(ctx.x_shape)
        dgates = torch.empty_like(gates) if need_g else None
        w_in_t, w_out_t = w_in.transpose(1, 2), w_out.transpose(1, 2)  # (E, 2h, d), (E, d, h)
        dw_in = dw_out = None  # (E, d, 2h), (E, h, d): a pack's result itself when one pack holds every expert
        written = [False] * E
        if not (len(ctx.items) == 1 and ctx.items[0][5] is not None and ctx.items[0][3:5] == (0, E)):
            dw_in, dw_out = torch.empty_like(w_in), torch.empty_like(w_out)
        for (r0, r1, tok, e0, e1, offs), (xc, hc, sc, act, yc) in zip(ctx.items, ctx.saved, strict=True):
            # the gradient reaching the expert's output, gate * dy, and d gate = <dy, expert output>
            dyc = gather_rows_grad(dy, tok, yc, None if gates is None else gates[r0:r1],
                                   dgates[r0:r1] if need_g else None)  # (R, d)
            act_t = act.t()  # (h, R)
            if offs is None:  # a piece of expert e0: weight grads accumulate over its pieces
                _mm_into(dw_out[e0], act_t, dyc, written[e0])
                dh = swiglu_backward(dyc @ w_out_t[e0], hc, sc)  # (R, 2h)
                _mm_into(dw_in[e0], xc.t(), dh, written[e0])
                dxc = dh @ w_in_t[e0] if need_x else None  # (R, d)
            else:  # whole experts e0..e1-1, each only in this chunk
                g_out = F.grouped_mm(act_t, dyc, offs=offs)  # (G, h, d)
                dh = swiglu_backward(F.grouped_mm(dyc, w_out_t[e0:e1], offs=offs), hc, sc)
                g_in = F.grouped_mm(xc.t(), dh, offs=offs)  # (G, d, 2h)
                if dw_in is None:
                    dw_in, dw_out = g_in, g_out
                else:
                    dw_in[e0:e1], dw_out[e0:e1] = g_in, g_out
                dxc = F.grouped_mm(dh, w_in_t[e0:e1], offs=offs) if need_x else None
            written[e0:e1] = [True] * (e1 - e0)
            if need_x:
                scatter_rows(dx, tok, dxc, None, accumulate=not ctx.each_token_once)
        if dw_in is None:  # no rows at all
            dw_in, dw_out = torch.zeros_like(w_in), torch.zeros_like(w_out)
        for e, done in enumerate(written):  # experts that got no rows and no pack
            if not done:
                dw_in[e].zero_()
                dw_out[e].zero_()
        return (dx if need_x else None, dgates, dw_in if need_win else None, dw_out if need_wout else None,
                None, None, None, None)


def _mm_into(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, accumulate: bool) -> None:
    if accumulate:
        out.addmm_(a, b)
    else:
        torch.mm(a, b, out=out)


def gather_rows(src: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """src[index] (n, d): one memcpy per row in C (native/rows.c), else index_select."""
    lib = native.for_tensors(src, index=index)
    if lib is None:
        return src.index_select(0, index)
    out = torch.empty(index.shape[0], src.shape[1], dtype=src.dtype)
    native.function(lib, "gather_rows", src.dtype)(
        src.data_ptr(), index.data_ptr(), index.shape[0], src.shape[1], out.data_ptr())
    return out


def scatter_rows(out: torch.Tensor, index: torch.Tensor, rows: torch.Tensor, scale: torch.Tensor | None,
                 accumulate: bool) -> None:
    """out[index[i]] += scale[i] * rows[i] (or = with accumulate False: index hits each row once); scale None
    means 1. In C where built (native/rows.c), else mul + index_add_ / index_copy_."""
    lib = native.for_tensors(rows, scale, out, index=index)
    if lib is None:
        rows = rows if scale is None else rows * scale[:, None]
        (out.index_add_ if accumulate else out.index_copy_)(0, index, rows)
        return
    native.function(lib, "scatter_rows", rows.dtype)(
        rows.data_ptr(), native.ptr(scale), index.data_ptr(), rows.shape[0], rows.shape[1], int(accumulate),
        out.data_ptr())


def gather_rows_grad(dy: torch.Tensor, index: torch.Tensor, rows: torch.Tensor | None, scale: torch.Tensor | None,
                     d_scale: torch.Tensor | None) -> torch.Tensor:
    """scale[:, None] * dy[index] (n, d), and d_scale[i] = <dy[index[i]], rows[i]> written in place when given:
    the backward of scatter_rows."""
    lib = native.for_tensors(dy, rows if d_scale is not None else None, scale, d_scale, index=index)
    if lib is None:
        out = dy.index_select(0, index)
        if d_scale is not None:
            torch.linalg.vecdot(out, rows, out=d_scale)
        if scale is not None:
            out.mul_(scale[:, None])
        return out
    out = torch.empty(index.shape[0], dy.shape[1], dtype=dy.dtype)
    native.function(lib, "gather_rows_grad", dy.dtype)(
        dy.data_ptr(), index.data_ptr(), index.shape[0], dy.shape[1], None if d_scale is None else rows.data_ptr(),
        native.ptr(scale), out.data_ptr(), native.ptr(d_scale))
    return out


class NativeExperts(torch.autograd.Function):
    """DispatchExpertsCombine's computation as one C call each way (native/experts.c): the matmuls too."""

    @staticmethod
    def forward(ctx, x, gates, w_in, w_out, token_order, counts, each_token_once, lib):
        T, d = x.shape
        E, h, N = w_in.shape[0], w_in.shape[2] // 2, token_order.shape[0]
        need_x, need_g, need_win, need_wout = ctx.needs_input_grad[:4]
        keep = need_x or need_g or need_win or need_wout
        xs, hs, acts = (x.new_empty(N, d), x.new_empty(N, 2 * h), x.new_empty(N, h)) if keep else (None,) * 3
        ys = x.new_empty(N, d) if need_g else None  # un-gated outputs: d gate = <dy, output>
        y = x.new_empty(T, d)
        status = native.function(lib, "experts_forward", x.dtype)(
            x.data_ptr(), T, d, h, E, counts.data_ptr(), token_order.data_ptr(), native.ptr(gates), w_in.data_ptr(),
            w_out.data_ptr(), int(not each_token_once), y.data_ptr(), native.ptr(xs), native.ptr(hs),
            native.ptr(acts), native.ptr(ys))
        if status != 0:
            raise MemoryError("the C expert kernel could not allocate its work space")
        ctx.save_for_backward(gates, w_in, w_out, token_order, counts)
        ctx.kept, ctx.T, ctx.each_token_once, ctx.lib = (xs, hs, acts, ys), T, each_token_once, lib
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        gates, w_in, w_out, token_order, counts = ctx.saved_tensors
        xs, hs, acts, ys = ctx.kept
        need_x, need_g = ctx.needs_input_grad[:2]
        dy = dy.contiguous()
        E, d, h = w_in.shape[0], w_in.shape[1], w_in.shape[2] // 2
        dx = dy.new_empty(ctx.T, d) if need_x else None
        d_gates = dy.new_empty(token_order.shape[0]) if need_g else None
        dw_in, dw_out = torch.empty_like(w_in), torch.empty_like(w_out)
        status = native.function(ctx.lib, "experts_backward", dy.dtype)(
            dy.data_ptr(), ctx.T, d, h, E, counts.data_ptr(), token_order.data_ptr(), native.ptr(gates),
            w_in.data_ptr(), w_out.data_ptr(), int(not ctx.each_token_once), xs.data_ptr(), hs.data_ptr(),
            acts.data_ptr(), native.ptr(ys), native.ptr(dx), native.ptr(d_gates), dw_in.data_ptr(), dw_out.data_ptr())
        if status != 0:
            raise MemoryError("the C expert kernel could not allocate its work space")
        return dx, d_gates, dw_in, dw_out, None, None, None, None


def experts_fit_c_matmul(w_in: torch.Tensor) -> bool:
    """Whether one expert's W_in (d, 2h) is small enough for the C matmul (EXPERT_WEIGHTS_LIMIT entries)."""
    return w_in.shape[1] * w_in.shape[2] <= EXPERT_WEIGHTS_LIMIT


def _native_experts(x, gates, w_in, w_out, token_order, counts):
    """The C kernels if they fit these tensors (contiguous CPU float32/64, int64 indices) and the expert size."""
    if not experts_fit_c_matmul(w_in) or counts.dtype != torch.long:
        return None
    if x.dim() != 2 or not counts.is_contiguous() or counts.device.type != "cpu":
        return None
    return native.for_tensors(x, gates, w_in, w_out, index=token_order, matmul=True)


def dispatch_experts_combine(
    x, gates, w_in, w_out, token_order, counts: torch.Tensor, each_token_once: bool = False
) -> torch.Tensor:
    """y (T, d) = sum over sorted pairs of gates * SwiGLU expert(x[token_order]); see the module docstring.

    gates None means every gate is exactly 1 (top-1 renormalized): no multiply, and no gradient to send back
    (it would be 0). each_token_once: token_order is a permutation of the T tokens (top-1, nothing dropped).
    """
    lib = _native_experts(x, gates, w_in, w_out, token_order, counts)
    if lib is not None:
        return NativeExperts.apply(x, gates, w_in, w_out, token_order, counts, each_token_once, lib)
    if x.device.type == "cuda" or token_order.shape[0] <= UNCHUNKED_ROWS:
        max_rows = CHUNK_ROWS_CUDA
    else:
        max_rows = CHUNK_ROWS
    return DispatchExpertsCombine.apply(
        x, gates, w_in, w_out, token_order, counts.tolist(), max_rows, each_token_once
    )
