"""One AdamW step without the optimizer's Python bookkeeping: the same fused kernel, called directly.

AdamW (Loshchilov & Hutter 2019, arXiv:1711.05101) with fused=True runs one kernel per device, but
`Optimizer.step()` first walks hooks, groups tensors by device and dtype, and rebuilds the state lists. On
the Playground's small models that bookkeeping took longer than the kernel (about 150 us of a 3 ms step on
two CPU cores, benchmarks/README.md). `fused_adamw_step` makes exactly the call `torch.optim.AdamW` makes
(`_foreach_add_` on the step counters, then `torch._fused_adamw_`) on lists it reads from the optimizer's
own state, so learning-rate changes and checkpoints see one optimizer. Anything unusual (the first step,
which creates the state; a parameter seen for the first time; several groups or devices; a torch without
the kernel; AMSGrad, maximize, capturable) goes through `optimizer.step()` unchanged.
tests/moe_core/test_optim_step.py checks the two paths give bit-identical weights.
"""

from __future__ import annotations

import torch

_HAS_FUSED = hasattr(torch, "_fused_adamw_")


def fused_adamw_step(optimizer: torch.optim.AdamW) -> None:
    """optimizer.step() for a single-group, single-device fused AdamW, minus its Python overhead."""
    groups = optimizer.param_groups
    group = groups[0]
    if (not _HAS_FUSED or len(groups) != 1 or not group.get("fused") or group["amsgrad"] or group["maximize"]
            or group["capturable"] or group["differentiable"] or isinstance(group["lr"], torch.Tensor)):
        optimizer.step()
        return
    params = [p for p in group["params"] if p.grad is not None]
    state = optimizer.state
    if not params or any(p not in state for p in params) or len({p.device for p in params}) != 1:
        optimizer.step()  # creates the state of parameters it has not seen yet
        return
    states = [state[p] for p in params]
    steps = [s["step"] for s in states]
    beta1, beta2 = group["betas"]
    torch._foreach_add_(steps, 1)
    torch._fused_adamw_(
        params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [],
        steps, amsgrad=False, lr=group["lr"], beta1=float(beta1), beta2=float(beta2),
        weight_decay=group["weight_decay"], eps=group["eps"], maximize=False, grad_scale=None, found_inf=None,
    )
