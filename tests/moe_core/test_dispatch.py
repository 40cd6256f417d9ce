"""The fused dispatch + experts + combine Function against plain autograd ops, chunk plans included."""

from __future__ import annotations

import pytest
import torch
from torch_devices import DEVICES

import moe_core.accelerator.dispatch as dispatch
import moe_core.accelerator.kernels
from moe_core import MoEConfig, MoELayer
from moe_core.accelerator.dispatch import DispatchExpertsCombine, plan_chunks
from moe_core.layer.experts import swiglu_backward, swiglu_forward
from moe_core.layer.reference import naive_moe


def _slow(x, gates, w_in, w_out, token_order, counts):
    """The same function from autograd ops, one expert at a time (what the layer did before the fusion)."""
    y = torch.zeros_like(x)
    row = 0
    for e, n in enumerate(counts):
        tok = token_order[row : row + n]
        gate, up = (x[tok] @ w_in[e]).chunk(2, dim=-1)
        out = (torch.nn.functional.silu(gate) * up) @ w_out[e]  # (n, d)
        y = y.index_add(0, tok, out * gates[row : row + n, None])
        row += n
    return y


@pytest.fixture(autouse=True, params=["C kernels", "torch ops"])
def kernel_path(request, monkeypatch):
    """Every test on both paths: the C kernels (moe_core/accelerator/native: the row moves and activation around torch's
    matmuls in DispatchExpertsCombine, the whole expert step in NativeExperts) and torch ops only. The C matmul
    is tested whatever compiler built it, also where it has no vector build and the layer would not use it."""
    if request.param == "torch ops":
        monkeypatch.setenv("MOE_PLAYGROUND_NATIVE", "0")
    else:
        monkeypatch.setattr(moe_core.accelerator.kernels, "_gemm_vectorized", lambda lib: True)
    return request.param


def _apply(x, gates, w_in, w_out, tok, counts, max_rows, each_token_once=False):
    return DispatchExpertsCombine.apply(x, gates, w_in, w_out, tok, counts, max_rows, each_token_once)


def _problem(T, E, k, d, h, dtype, empty=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    experts = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)])  # (T, k) distinct
    for e in empty:  # send expert e's pairs elsewhere so that it gets no rows
        experts[experts == e] = (e + 1) % E if (e + 1) % E not in empty else (e + 2) % E
    flat = experts.t().reshape(-1)
    pair_order = torch.sort(flat, stable=True).indices
    counts = torch.bincount(flat, minlength=E).tolist()
    x = torch.randn(T, d, dtype=dtype, generator=g)
    gates = torch.rand(T * k, dtype=dtype, generator=g)
    w_in = torch.randn(E, d, 2 * h, dtype=dtype, generator=g) / d**0.5
    w_out = torch.randn(E, h, d, dtype=dtype, generator=g) / h**0.5
    return x, gates, w_in, w_out, pair_order % T, counts


def test_plan_covers_every_row_once_and_never_mixes_a_split_expert():
    for counts, max_rows in [([5, 0, 3, 9, 0, 1], 4), ([0, 0, 7], 3), ([2, 2, 2, 2], 4), ([0, 0], 8), ([10], 10)]:
        chunks = plan_chunks(counts, max_rows)
        rows = [r for r0, r1, _, _ in chunks for r in range(r0, r1)]
        assert rows == list(range(sum(counts)))
        starts = [sum(counts[:e]) for e in range(len(counts) + 1)]
        for r0, r1, e0, e1 in chunks:
            assert 0 < r1 - r0 <= max_rows
            if e1 - e0 == 1:  # a piece of one expert
                assert starts[e0] <= r0 and r1 <= starts[e0 + 1]
            else:  # whole experts
                assert (r0, r1) == (starts[e0], starts[e1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("max_rows", [1, 4, 7, 1000])
@pytest.mark.parametrize("empty", [(), (0, 3), (5,)])
def test_matches_autograd_ops(dtype, max_rows, empty):
    T, E, k, d, h = 19, 6, 2, 8, 4  # float32 with d, h multiples of 4 takes the grouped_mm path for packs
    x, gates, w_in, w_out, tok, counts = _problem(T, E, k, d, h, dtype, empty)
    assert all(counts[e] == 0 for e in empty)
    assert dispatch._grouped_ok(x, w_in) == (dtype == torch.float32)  # packs of experts: grouped_mm vs mm loop
    _assert_matches_slow(lambda *a: _apply(*a, tok, counts, max_rows), x, gates, w_in, w_out, tok, counts,
                         1e-12 if dtype == torch.float64 else 1e-5)


def _assert_matches_slow(run, x, gates, w_in, w_out, tok, counts, tol):
    """run(x, gates, w_in, w_out) against _slow: the output and the gradients of <y, probe> for all four inputs."""
    inputs = [t.clone().requires_grad_() for t in (x, gates, w_in, w_out)]
    ref_inputs = [t.clone().requires_grad_() for t in (x, gates, w_in, w_out)]
    y = run(*inputs)
    y_ref = _slow(*ref_inputs, tok, counts)
    probe = torch.randn_like(y)
    (y * probe).sum().backward()
    (y_ref * probe).sum().backward()
    torch.testing.assert_close(y, y_ref, atol=tol, rtol=tol)
    for name, a, b in zip(["x", "gates", "w_in", "w_out"], inputs, ref_inputs, strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=tol, rtol=tol, msg=lambda m, n=name: f"grad {n}: {m}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("max_rows", [4, 1000])
def test_one_expert(dtype, max_rows):
    x, gates, w_in, w_out, tok, counts = _problem(10, 1, 1, 8, 4, dtype)
    inputs = [t.clone().requires_grad_() for t in (x, gates, w_in, w_out)]
    ref_inputs = [t.clone().requires_grad_() for t in (x, gates, w_in, w_out)]
    (_apply(*inputs, tok, counts, max_rows) ** 2).sum().backward()
    (_slow(*ref_inputs, tok, counts) ** 2).sum().backward()
    for a, b in zip(inputs, ref_inputs, strict=True):
        torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("max_rows", [8, None])
def test_on_every_device_against_float64_on_the_cpu(device, dtype, max_rows):
    """float32 and bfloat16 on each device (bf16 on a CUDA GPU of SM80+ takes the grouped_mm path), the device's
    own chunk size (None) and a small one, against the autograd form in float64 on the CPU."""
    x, gates, w_in, w_out, tok, counts = _problem(40, 6, 2, 16, 8, torch.float64, empty=(2,))
    ref_inputs = [t.clone().requires_grad_() for t in (x, gates, w_in, w_out)]
    inputs = [t.to(device, dtype).requires_grad_() for t in (x, gates, w_in, w_out)]
    if max_rows is None:
        max_rows = dispatch.CHUNK_ROWS_CUDA if device == "cuda" else dispatch.CHUNK_ROWS  # (40 * 2 rows: one chunk)
    y = _apply(*inputs, tok.to(device), counts, max_rows)
    y_ref = _slow(*ref_inputs, tok, counts)
    probe = torch.randn(y_ref.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    (y * probe.to(device, dtype)).sum().backward()
    (y_ref * probe).sum().backward()
    # relative to each tensor's largest entry: bf16 keeps 8 bits of mantissa (one rounding ~ 0.4 %)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    pairs = [("y", y, y_ref)] + [(n, a.grad, b.grad) for n, a, b in zip(["x", "gates", "w_in", "w_out"], inputs,
                                                                      ref_inputs, strict=True)]
    for name, got, ref in pairs:
        err = (got.double().cpu() - ref.detach()).abs().max().item()
        assert err <= tol * ref.abs().max().item(), f"{name}: max |error| {err:.3g}, max |ref| {ref.abs().max():.3g}"


@pytest.mark.parametrize("max_rows", [3, 1000])
def test_gradcheck(max_rows):
    x, gates, w_in, w_out, tok, counts = _problem(9, 4, 2, 3, 2, torch.float64, empty=(2,), seed=1)
    inputs = [t.requires_grad_() for t in (x, gates, w_in, w_out)]
    assert torch.autograd.gradcheck(lambda *a: _apply(*a, tok, counts, max_rows), inputs)


def test_only_the_needed_grads_and_expanded_incoming_gradient():
    x, gates, w_in, w_out, tok, counts = _problem(16, 4, 2, 8, 4, torch.float32)
    w_in.requires_grad_()
    y = _apply(x, gates, w_in, w_out, tok, counts, 5)
    y.sum().backward()  # a stride-0 gradient
    ref = w_in.detach().clone().requires_grad_()
    _slow(x, gates, ref, w_out, tok, counts).sum().backward()
    torch.testing.assert_close(w_in.grad, ref.grad, atol=1e-5, rtol=1e-5)
    assert x.grad is None and gates.grad is None


def test_no_rows_at_all_gives_zeros_and_zero_weight_grads():
    x = torch.randn(5, 8)
    w_in = torch.randn(3, 8, 8, requires_grad=True)
    w_out = torch.randn(3, 4, 8, requires_grad=True)
    y = _apply(x, torch.zeros(0), w_in, w_out, torch.zeros(0, dtype=torch.long), [0, 0, 0], 4)
    assert torch.equal(y, torch.zeros_like(x))
    y.sum().backward()
    assert torch.equal(w_in.grad, torch.zeros_like(w_in)) and torch.equal(w_out.grad, torch.zeros_like(w_out))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("capacity_factor", [None, 0.75])
def test_layer_with_tiny_chunks_matches_reference(monkeypatch, dtype, capacity_factor):
    """The layer's own path with chunks of 5 rows (pieces and packs at once) against the per-token reference."""
    monkeypatch.setattr(dispatch, "CHUNK_ROWS", 5)
    monkeypatch.setattr(dispatch, "UNCHUNKED_ROWS", 0)
    torch.manual_seed(0)
    cfg = MoEConfig(d_model=8, n_experts=6, top_k=2, expert_hidden=4, capacity_factor=capacity_factor)
    layer = MoELayer(cfg).to(dtype)
    x = torch.randn(30, 8, dtype=dtype, requires_grad=True)
    probe = torch.randn(30, 8, dtype=dtype)
    y, info = layer(x)
    params = [x, *layer.parameters()]
    grads = torch.autograd.grad((y * probe).sum() + info.aux_loss, params)
    y_ref, aux_ref, _ = naive_moe(layer, x)
    grads_ref = torch.autograd.grad((y_ref * probe).sum() + aux_ref, params)
    torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("max_rows", [3, 1000])
@pytest.mark.parametrize("each_token_once", [False, True])
def test_top1_unit_gates_and_tokens_copied_back(dtype, max_rows, each_token_once):
    """gates None (top-1 renormalized: every gate is exactly 1) and each_token_once (top-1, nothing dropped:
    rows are copied back, not added) give the same values and gradients as gates of ones through index_add."""
    x, _, w_in, w_out, tok, counts = _problem(23, 5, 1, 8, 4, dtype, empty=(1,))
    assert sorted(tok.tolist()) == list(range(23))  # top-1: a permutation of the tokens
    inputs = [t.clone().requires_grad_() for t in (x, w_in, w_out)]
    ref_inputs = [t.clone().requires_grad_() for t in (x, w_in, w_out)]
    y = _apply(inputs[0], None, *inputs[1:], tok, counts, max_rows, each_token_once)
    y_ref = _slow(ref_inputs[0], torch.ones(23, dtype=dtype), *ref_inputs[1:], tok, counts)
    probe = torch.randn_like(y)
    (y * probe).sum().backward()
    (y_ref * probe).sum().backward()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(y, y_ref, atol=tol, rtol=tol)
    for a, b in zip(inputs, ref_inputs, strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_swiglu_activation_matches_autograd(dtype, kernel_path):
    """The activation and its backward (the C kernel where it is built, else torch ops) against autograd on
    silu(gate) * up, over inputs from -100 to 100 (exp's range reduction and the sigmoid's two branches)."""
    g = torch.Generator().manual_seed(3)
    h = torch.cat([torch.randn(200, 16, generator=g, dtype=dtype) * 4, torch.linspace(-100, 100, 16 * 37,
                   dtype=dtype).reshape(37, 16), torch.zeros(1, 16, dtype=dtype)]).reshape(-1, 16)  # (R, 2h)
    act, silu_gate = swiglu_forward(h)
    assert (silu_gate is None) == (kernel_path == "C kernels" and moe_core.accelerator.kernels.kernels() is not None)
    ref_h = h.clone().requires_grad_()
    ref = torch.nn.functional.silu(ref_h[:, :8]) * ref_h[:, 8:]
    da = torch.randn(ref.shape, generator=g, dtype=dtype)
    ref.backward(da)
    tol = 1e-12 if dtype == torch.float64 else 2e-6
    torch.testing.assert_close(act, ref.detach(), atol=tol, rtol=tol)
    torch.testing.assert_close(swiglu_backward(da, h, silu_gate), ref_h.grad, atol=tol, rtol=tol)


# -- dispatch_experts_combine: the whole expert step in C (NativeExperts, native/experts.c) where it fits -------

def _combine(x, gates, w_in, w_out, tok, counts, each_token_once=False):
    return dispatch.dispatch_experts_combine(x, gates, w_in, w_out, tok, torch.tensor(counts), each_token_once)


def test_c_experts_run_where_built_and_not_past_the_size_limit(kernel_path, monkeypatch):
    x, gates, w_in, w_out, tok, counts = _problem(8, 3, 2, 8, 4, torch.float32)
    counts_t = torch.tensor(counts)
    built = kernel_path == "C kernels" and moe_core.accelerator.kernels.kernels() is not None
    assert (dispatch._native_experts(x, gates, w_in, w_out, tok, counts_t) is not None) == built
    monkeypatch.setattr(moe_core.accelerator.kernels, "_gemm_vectorized", lambda lib: False)  # e.g. clang < 19, or ARM
    assert dispatch._native_experts(x, gates, w_in, w_out, tok, counts_t) is None
    monkeypatch.setattr(dispatch, "EXPERT_WEIGHTS_LIMIT", 8 * 8 - 1)  # d * 2h = 64: one over the limit
    assert dispatch._native_experts(x, gates, w_in, w_out, tok, counts_t) is None
    assert dispatch._native_experts(x, gates.to(torch.float64), w_in, w_out, tok, counts_t) is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("T", "E", "k", "d", "h", "empty"),
                         [(19, 6, 2, 8, 4, (0, 3)), (300, 5, 2, 70, 40, ()), (33, 4, 3, 13, 5, (2,)),
                          (700, 3, 1, 64, 96, ())])
def test_combine_matches_autograd_ops(dtype, T, E, k, d, h, empty):
    """Shapes that exercise the C matmul's full 4 x 64 tiles, its ragged row and column edges, expert blocks of
    more than BLOCK_ROWS rows (700 tokens over 3 experts), the 8 x 8 transposes and their edges, empty experts."""
    x, gates, w_in, w_out, tok, counts = _problem(T, E, k, d, h, dtype, empty)
    _assert_matches_slow(lambda *a: _combine(*a, tok, counts), x, gates, w_in, w_out, tok, counts,
                         1e-12 if dtype == torch.float64 else 2e-5)


@pytest.mark.parametrize("each_token_once", [False, True])
def test_combine_top1_unit_gates_and_gradcheck(each_token_once):
    x, _, w_in, w_out, tok, counts = _problem(11, 4, 1, 5, 3, torch.float64, empty=(2,), seed=2)
    inputs = [t.requires_grad_() for t in (x, w_in, w_out)]
    assert torch.autograd.gradcheck(
        lambda a, b, c: _combine(a, None, b, c, tok, counts, each_token_once), inputs)
    x, gates, w_in, w_out, tok, counts = _problem(9, 4, 2, 3, 2, torch.float64, empty=(1,), seed=3)
    inputs = [t.requires_grad_() for t in (x, gates, w_in, w_out)]
    assert torch.autograd.gradcheck(lambda *a: _combine(*a, tok, counts), inputs)


def test_combine_without_gradients_and_with_only_some():
    """No gradient wanted (no_grad, as in the views): the same values, nothing kept for a backward; and only the
    weights' gradients asked for."""
    x, gates, w_in, w_out, tok, counts = _problem(40, 4, 2, 8, 8, torch.float32)
    with torch.no_grad():
        y0 = _combine(x, gates, w_in, w_out, tok, counts)
    torch.testing.assert_close(y0, _slow(x, gates, w_in, w_out, tok, counts), atol=1e-5, rtol=1e-5)
    w = w_out.clone().requires_grad_()
    _combine(x, gates, w_in, w, tok, counts).sum().backward()  # an expanded (stride 0) incoming gradient
    ref = w_out.clone().requires_grad_()
    _slow(x, gates, w_in, ref, tok, counts).sum().backward()
    torch.testing.assert_close(w.grad, ref.grad, atol=1e-5, rtol=1e-5)


def test_combine_with_no_rows():
    x = torch.randn(5, 8)
    w_in = torch.randn(3, 8, 8, requires_grad=True)
    w_out = torch.randn(3, 4, 8, requires_grad=True)
    y = _combine(x, torch.zeros(0), w_in, w_out, torch.zeros(0, dtype=torch.long), [0, 0, 0])
    assert torch.equal(y, torch.zeros_like(x))
    y.sum().backward()
    assert torch.equal(w_in.grad, torch.zeros_like(w_in)) and torch.equal(w_out.grad, torch.zeros_like(w_out))
