"""A bank of E SwiGLU experts stored as stacked tensors, run on tokens already grouped by expert.

Each expert is the Mixtral/Llama feed-forward block  FFN_e(x) = (silu(x W_gate_e) * (x W_up_e)) W_down_e
(Shazeer 2020, "GLU Variants Improve Transformer"), with W_gate and W_up stored as one (d, 2h) matrix per
expert so that one matmul serves both.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def swiglu(h: torch.Tensor) -> torch.Tensor:
    """(..., 2h) -> (..., h): silu(gate) * up, for h = [gate | up]."""
    gate, up = h.chunk(2, dim=-1)
    return F.silu(gate) * up


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
        """Expert e on any batch of tokens (the slow, obvious form; used by the reference and the lessons)."""
        return swiglu(x @ self.w_in[e]) @ self.w_out[e]

    def forward(self, x_sorted: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """x_sorted (N, d): rows grouped by expert, counts (E,) rows per expert. Returns (N, d), row for row.

        One matmul pair per expert on its contiguous block, as Mixtral's block loops over experts. The weights are
        unbind-ed once: indexing W[e] inside the loop would make backward fill a whole (E, d, 2h) gradient per expert.
        """
        w_in, w_out = self.w_in.unbind(0), self.w_out.unbind(0)  # E x (d, 2h), E x (h, d)
        blocks = x_sorted.split(counts.tolist())  # E blocks (n_e, d)
        outs = [swiglu(xe @ w_in[e]) @ w_out[e] for e, xe in enumerate(blocks) if xe.shape[0]]  # (n_e, d) each
        if not outs:  # no rows at all: an empty output still tied to the weights (their gradient is 0, not None)
            return x_sorted * 0 + 0 * (self.w_in.sum() + self.w_out.sum())  # (0, d)
        return torch.cat(outs)  # (N, d)

    def forward_all(self, x: torch.Tensor) -> torch.Tensor:
        """Every expert on every row: x (E, n, d) -> (E, n, d), one batched matmul (dense mixture, soft slots)."""
        return torch.bmm(swiglu(torch.bmm(x, self.w_in)), self.w_out)  # (E, n, d)


class SwiGLU(nn.Module):
    """A dense SwiGLU MLP: the shared experts of DeepSeekMoE, and the dense-equivalent baseline."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.w_in = nn.Linear(d_model, 2 * hidden, bias=False)  # gate | up
        self.w_out = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_out(swiglu(self.w_in(x)))
