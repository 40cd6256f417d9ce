"""The softmax top-k MoE layer as one autograd Function over one C call each way (native/layer.c).

Forward: router matmul, softmax, top-k, renormalization, balance and z losses, capacity (position priority),
gather, SwiGLU experts, gated scatter and the weighted aux loss; backward: all of their gradients, written by hand.
Results agree with MoELayer.route_and_mix to float rounding (another summation order; fused multiply-adds).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from moe_core.accelerator.kernels import function, ptr


class FusedMoE(torch.autograd.Function):
    """x (T, d), xr (T, d) the router's input (x itself, or its jittered copy), w_router (E, d), w_in (E, d, 2h),
    w_out (E, h, d) -> y (T, d), load_balance, z, aux (differentiable; z only when z_grad) and, not
    differentiable: logits, probs (T, E), index, combine (T, k), dropped (T, k) bool, counts, kept_counts (E,)."""

    @staticmethod
    def forward(ctx, x, xr, w_router, w_in, w_out, k, normalize, capacity, unit_gates, aux_coef, z_coef, z_grad,
                lib):
        T, d = x.shape
        E, h = w_in.shape[0], w_in.shape[2] // 2
        keep = any(ctx.needs_input_grad[:5])
        f, long = x.new_empty, torch.long
        y, logits, probs, lse = f(T, d), f(T, E), f(T, E), f(T)
        gates, combine, gates_kept = f(T, k), f(T, k), f(T * k)
        index, counts, kept_counts = f(T, k, dtype=long), f(E, dtype=long), f(E, dtype=long)
        kept_pairs, token_order = f(T * k, dtype=long), f(T * k, dtype=long)
        dropped = f(T, k, dtype=torch.bool)
        load_balance, z, aux = f(()), f(()), f(())
        xs, hs, acts = (f(T * k, d), f(T * k, 2 * h), f(T * k, h)) if keep else (None, None, None)
        ys = f(T * k, d) if keep and not unit_gates else None
        p = ptr
        status = function(lib, "layer_forward", x.dtype)(
            x.data_ptr(), xr.data_ptr(), T, d, h, E, k, int(normalize), -1 if capacity is None else capacity,
            int(unit_gates), w_router.data_ptr(), w_in.data_ptr(), w_out.data_ptr(), aux_coef, z_coef,
            y.data_ptr(), logits.data_ptr(), probs.data_ptr(), lse.data_ptr(), gates.data_ptr(), combine.data_ptr(),
            index.data_ptr(), counts.data_ptr(), kept_counts.data_ptr(), dropped.data_ptr(), kept_pairs.data_ptr(),
            token_order.data_ptr(), gates_kept.data_ptr(), load_balance.data_ptr(), z.data_ptr(), aux.data_ptr(),
            p(xs), p(hs), p(acts), p(ys))
        if status != 0:
            raise MemoryError("the C layer kernel could not allocate its work space")
        ctx.save_for_backward(xr, w_router, w_in, w_out, probs, gates, index, counts, kept_counts)
        # not user-visible: kept as attributes (the saved-tensor checks guard the tensors handed out)
        ctx.internal = (lse, kept_pairs, token_order, gates_kept, xs, hs, acts, ys)
        ctx.config = (T, d, h, E, k, normalize, capacity, unit_gates, aux_coef, z_coef, z_grad, lib, xr is x)
        ctx.set_materialize_grads(False)
        constant = [logits, probs, index, combine, dropped, counts, kept_counts]
        ctx.mark_non_differentiable(*constant, *([] if z_grad else [z]))
        return y, load_balance, z, aux, *constant

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, d_load_balance, d_z, d_aux, *_constant):
        xr, w_router, w_in, w_out, probs, gates, index, counts, kept_counts = ctx.saved_tensors
        lse, kept_pairs, token_order, gates_kept, xs, hs, acts, ys = ctx.internal
        T, d, h, E, k, normalize, capacity, unit_gates, aux_coef, z_coef, z_grad, lib, same_input = ctx.config
        d_aux_v = 0.0 if d_aux is None else float(d_aux)
        d_lb_v = (0.0 if d_load_balance is None else float(d_load_balance)) + aux_coef * d_aux_v
        d_z_v = (0.0 if d_z is None else float(d_z)) + z_coef * d_aux_v if z_grad else 0.0
        dy = torch.zeros_like(xr) if dy is None else dy.contiguous()
        dx = dy.new_empty(T, d)
        dxr = None if same_input else dy.new_empty(T, d)
        dw_router, dw_in, dw_out = torch.empty_like(w_router), torch.empty_like(w_in), torch.empty_like(w_out)
        p = ptr
        status = function(lib, "layer_backward", dy.dtype)(
            dy.data_ptr(), d_lb_v, d_z_v, xr.data_ptr(), T, d, h, E, k, int(normalize),
            -1 if capacity is None else capacity, int(unit_gates), w_router.data_ptr(), w_in.data_ptr(),
            w_out.data_ptr(), probs.data_ptr(), lse.data_ptr(), gates.data_ptr(), index.data_ptr(), counts.data_ptr(),
            kept_counts.data_ptr(), kept_pairs.data_ptr(), token_order.data_ptr(), gates_kept.data_ptr(),
            xs.data_ptr(), hs.data_ptr(), acts.data_ptr(), p(ys), dx.data_ptr(), p(dxr), dw_router.data_ptr(),
            dw_in.data_ptr(), dw_out.data_ptr())
        if status != 0:
            raise MemoryError("the C layer kernel could not allocate its work space")
        return dx, dxr, dw_router, dw_in, dw_out, None, None, None, None, None, None, None, None
