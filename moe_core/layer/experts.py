"""A bank of E SwiGLU experts stored as stacked tensors, run on tokens already grouped by expert.

Each expert is the Mixtral/Llama feed-forward block  FFN_e(x) = (silu(x W_gate_e) * (x W_up_e)) W_down_e,
with W_gate and W_up fused into one (d, 2h) matrix per expert so that one matmul serves both.

Speed notes (benchmarks/README.md has the figures): the fast family sorts tokens by expert and runs
one matmul per expert on a contiguous block. We use torch's grouped_mm when the strides allow it (it
loops plain matmuls on the CPU but keeps the Python overhead low), else a loop over `unbind`-ed weights.
Never index `W[e]` inside the loop: backward would zero-fill a full (E, d, 2h) gradient per expert.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from moe_core.accelerator import kernels as native

_HAS_GROUPED_MM = hasattr(F, "grouped_mm")


class SwiGLUExperts(nn.Module):
    def __init__(self, n_experts: int, d_model: int, hidden: int):
        super().__init__()
        self.n_experts, self.d_model, self.hidden = n_experts, d_model, hidden
        self.w_in = nn.Parameter(torch.empty(n_experts, d_model, 2 * hidden))  # (E, d, 2h): gate | up
        self.w_out = nn.Parameter(torch.empty(n_experts, hidden, d_model))  # (E, h, d)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # the same ranges nn.Linear uses: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        nn.init.uniform_(self.w_in, -1 / math.sqrt(self.d_model), 1 / math.sqrt(self.d_model))
        nn.init.uniform_(self.w_out, -1 / math.sqrt(self.hidden), 1 / math.sqrt(self.hidden))

    def expert(self, e: int, x: torch.Tensor) -> torch.Tensor:
        """Expert e on any batch of tokens (the slow, obvious form; used by tests and the lessons)."""
        gate, up = (x @ self.w_in[e]).chunk(2, dim=-1)
        return (F.silu(gate) * up) @ self.w_out[e]  # plain ops on purpose: the reference uses no swiglu()

    def forward(self, x_sorted: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """x_sorted (N, d): rows grouped by expert, counts (E,) rows per expert. Returns (N, d)."""
        if x_sorted.shape[0] == 0:
            return x_sorted.new_zeros(0, self.d_model) + 0 * self.w_out.sum()  # keep the graph connected
        if self._grouped_ok(x_sorted):
            offs = torch.cumsum(counts, 0).to(torch.int32)  # (E,) end of each expert's block
            h = F.grouped_mm(x_sorted, self.w_in, offs=offs)  # (N, 2h)
            out = F.grouped_mm(swiglu(h), self.w_out, offs=offs)  # (N, d)
            return _ContiguousGrad.apply(out)
        w_in, w_out = self.w_in.unbind(0), self.w_out.unbind(0)
        outs = []
        for e, xe in enumerate(x_sorted.split(counts.tolist())):
            if xe.shape[0] == 0:
                continue
            outs.append(swiglu(xe @ w_in[e]) @ w_out[e])  # (n_e, d)
        return torch.cat(outs)

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert on every row: x (E, n, d) -> (E, n, d), one batched matmul (dense mixture, soft slots)."""
        return torch.bmm(swiglu(torch.bmm(x, self.w_in)), self.w_out)  # (E, n, d)

    def _grouped_ok(self, x: torch.Tensor) -> bool:
        # grouped_mm wants 16-byte aligned strides; on CUDA it also wants bf16 and SM80+, so we keep the
        # plain loop there (fast anyway: one kernel launch per expert)
        return (
            _HAS_GROUPED_MM
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.d_model % 4 == 0
            and self.hidden % 4 == 0
        )


def swiglu_forward(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(silu(gate) * up, silu(gate)) for h = [gate | up] (..., 2h). On a CPU with the C kernels built
    (native/swiglu.c: one pass over memory instead of silu + mul) silu(gate) is None: the C backward recomputes
    the sigmoid, one exp per element being cheaper than another pass. Else it is kept for the backward."""
    half = h.shape[-1] // 2
    lib = native.for_tensors(h)
    if lib is None:
        silu_gate = F.silu(h[..., :half])
        return silu_gate * h[..., half:], silu_gate
    act = h.new_empty(*h.shape[:-1], half)
    native.function(lib, "swiglu_forward", h.dtype)(h.data_ptr(), h.numel() // (2 * half), half, act.data_ptr())
    return act, None


def swiglu_backward(da: torch.Tensor, h: torch.Tensor, silu_gate: torch.Tensor | None) -> torch.Tensor:
    """d loss / d [gate | up] (..., 2h) from d loss / d (silu(gate) * up), both halves written into one buffer
    (autograd's chunk would concatenate them: a full extra pass over (N, 2h)). silu_gate: swiglu_forward's."""
    half = h.shape[-1] // 2
    dh = torch.empty_like(h)
    if silu_gate is None:  # swiglu_forward ran the C kernel
        da = da.to(h.dtype).contiguous()
        native.function(native.kernels(), "swiglu_backward", h.dtype)(
            da.data_ptr(), h.data_ptr(), h.numel() // (2 * half), half, dh.data_ptr())
        return dh
    torch.mul(da, silu_gate, out=dh[..., half:])  # d/d up
    torch.ops.aten.silu_backward.grad_input(da * h[..., half:], h[..., :half], grad_input=dh[..., :half])  # d/d gate
    return dh


class _SwiGLUActivation(torch.autograd.Function):
    """silu(gate) * up on h = [gate | up] (last dim), through swiglu_forward / swiglu_backward."""

    @staticmethod
    def forward(ctx, h: torch.Tensor) -> torch.Tensor:
        act, silu_gate = swiglu_forward(h)
        ctx.save_for_backward(h, silu_gate)
        return act

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        h, silu_gate = ctx.saved_tensors
        return swiglu_backward(grad, h, silu_gate)


def swiglu(h: torch.Tensor) -> torch.Tensor:
    """(..., 2h) -> (..., h): silu(gate) * up, with a one-buffer backward."""
    return _SwiGLUActivation.apply(h)


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous: grouped_mm's CPU backward rejects
    expanded (stride-0) gradients such as the one `out.sum().backward()` sends (performance-anchors.md)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


class SwiGLU(nn.Module):
    """A dense SwiGLU MLP: the shared experts of DeepSeekMoE, and the dense-equivalent baseline."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.w_in = nn.Linear(d_model, 2 * hidden, bias=False)  # gate | up
        self.w_out = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_out(swiglu(self.w_in(x)))
