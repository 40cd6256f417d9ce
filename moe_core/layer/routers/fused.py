"""Softmax top-k routing in one C call each way (moe_core/accelerator/native/route.c), for float32/float64 on a CPU.

Computes exactly what softmax_with_z -> topk_gates -> balance_losses compute with torch ops (plus the sort of
the (token, slot) pairs by expert that capacity.assign_slots would do next), as one autograd Function:

    logits (T, E) -> gates (T, k), gates_sorted (T*k,), load_balance (), z ()            differentiable
                     probs (T, E), index (T, k), counts (E,), the pairs sorted by expert     not differentiable

Used by the softmax_topk and switch routers when `fused_available(logits, k)`; otherwise they run the torch ops.
Both paths are checked against the per-token reference (tests/moe_core/test_layer_vs_reference.py) and
against each other, values and gradients (tests/moe_core/test_native.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moe_core.accelerator import kernels as native

MAX_FUSED_K = 8  # the C top-k is k passes over E: fine for the k people use, not for k = E = 256


@dataclass
class FusedRoute:
    gates: torch.Tensor  # (T, k) combine weights, normalized or not (differentiable)
    load_balance: torch.Tensor  # () E/(kT) sum_e counts_e P_e (differentiable)
    z: torch.Tensor  # () mean_t logsumexp_t^2 (differentiable when asked for)
    probs: torch.Tensor  # (T, E)
    index: torch.Tensor  # (T, k) long
    counts: torch.Tensor  # (E,) long: slots per expert
    pair_order: torch.Tensor  # (T*k,) long: pair ids n = j*T + t grouped by expert (stable)
    token_order: torch.Tensor  # (T*k,) long: token of each pair in pair_order
    sorted_experts: torch.Tensor  # (T*k,) long: expert of each pair in pair_order
    gates_sorted: torch.Tensor  # (T*k,) the gate of each pair in pair_order (differentiable): the dispatch's w


def fused_available(logits: torch.Tensor, k: int) -> bool:
    return (
        logits.device.type == "cpu"
        and logits.dtype in (torch.float32, torch.float64)
        and logits.dim() == 2
        and logits.shape[0] > 0
        and k <= MAX_FUSED_K
        and native.kernels() is not None
    )


def fused_softmax_topk(logits: torch.Tensor, k: int, normalize: bool, z_grad: bool) -> FusedRoute:
    """See the module docstring. z_grad=False keeps the z-loss out of the graph (reported, not trained)."""
    return FusedRoute(*_SoftmaxTopK.apply(logits, k, normalize, z_grad))


class _SoftmaxTopK(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, k: int, normalize: bool, z_grad: bool):
        logits = logits.contiguous()
        T, E = logits.shape
        f = torch.empty  # every output is written whole by the kernel
        probs, lse, gates = f(T, E, dtype=logits.dtype), f(T, dtype=logits.dtype), f(T, k, dtype=logits.dtype)
        index, counts = f(T, k, dtype=torch.long), f(E, dtype=torch.long)
        pair_order, token_order, sorted_experts = (f(T * k, dtype=torch.long) for _ in range(3))
        gates_sorted = f(T * k, dtype=logits.dtype)
        load_balance, z = f((), dtype=logits.dtype), f((), dtype=logits.dtype)
        status = native.function(native.kernels(), "route_forward", logits.dtype)(
            logits.data_ptr(), T, E, k, int(normalize), probs.data_ptr(), lse.data_ptr(), gates.data_ptr(),
            index.data_ptr(), counts.data_ptr(), pair_order.data_ptr(), token_order.data_ptr(),
            sorted_experts.data_ptr(), gates_sorted.data_ptr(), load_balance.data_ptr(), z.data_ptr(),
        )
        if status != 0:
            raise MemoryError("the C router kernel could not allocate its work space")
        ctx.save_for_backward(probs, lse, gates, index, counts, pair_order)
        ctx.k, ctx.normalize = k, normalize
        ctx.set_materialize_grads(False)
        constant = [probs, index, counts, pair_order, token_order, sorted_experts] + ([] if z_grad else [z])
        ctx.mark_non_differentiable(*constant)  # one call: a second one would replace the first
        return gates, load_balance, z, probs, index, counts, pair_order, token_order, sorted_experts, gates_sorted

    @staticmethod
    def backward(ctx, d_gates, d_load_balance, d_z, _probs, _index, _counts, _po, _to, _se, d_gates_sorted):
        probs, lse, gates, index, counts, pair_order = ctx.saved_tensors
        T, E = probs.shape
        d_logits = torch.empty_like(probs)
        if d_gates is not None:
            d_gates = d_gates.to(probs.dtype).contiguous()
        if d_gates_sorted is not None:
            d_gates_sorted = d_gates_sorted.to(probs.dtype).contiguous()
        status = native.function(native.kernels(), "route_backward", probs.dtype)(
            probs.data_ptr(), lse.data_ptr(), gates.data_ptr(), index.data_ptr(), counts.data_ptr(),
            native.ptr(d_gates), native.ptr(d_gates_sorted), pair_order.data_ptr(), T, E, ctx.k, int(ctx.normalize),
            0.0 if d_load_balance is None else float(d_load_balance),
            0.0 if d_z is None else float(d_z), d_logits.data_ptr(),
        )
        if status != 0:
            raise MemoryError("the C router kernel could not allocate its work space")
        return d_logits, None, None, None
