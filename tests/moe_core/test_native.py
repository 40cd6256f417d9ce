"""The C kernels (moe_core/accelerator/native): the fused softmax top-k router against the torch ops it replaces,
values,
gradients and the sort by expert; ties, NaNs and k up to MAX_FUSED_K; and how the library is built, cached,
refused and turned off."""

from __future__ import annotations

import os
import platform

import pytest
import torch

import moe_core.accelerator.kernels as native
from moe_core import MoEConfig, MoELayer
from moe_core.layer.routers.base import balance_losses, softmax_with_z, topk_gates
from moe_core.layer.routers.fused import MAX_FUSED_K, fused_available, fused_softmax_topk

NEEDS_COMPILER = pytest.mark.skipif(
    native._compiler() is None,
    reason="needs a C compiler (cc, gcc or clang on the PATH, or CC); CI installs gcc and requires it")


def test_the_kernels_are_built_where_a_compiler_is():
    """CI has gcc: there the C path must really run (the tests of both paths would otherwise test one twice)."""
    if os.environ.get("CI") or native._compiler() is not None:
        assert native.kernels() is not None
    if os.environ.get("CI") and platform.machine() == "x86_64":  # CI's gcc builds the AVX-512/AVX2 matmul
        assert native.kernels().moe_gemm_vectorized() == 1


def _torch_route(logits, k, normalize):
    probs, z = softmax_with_z(logits, 1.0)
    gates, index = topk_gates(probs, k, normalize)
    losses, counts = balance_losses(z, probs, index, logits.shape[1])
    return gates, losses["load_balance"], z, probs, index, counts


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("T", "E", "k", "normalize"),
                         [(256, 8, 2, True), (100, 4, 1, False), (37, 16, 3, True), (50, 8, 8, True),
                          (5, 64, 2, False), (1, 2, 2, True), (64, 8, 1, True)])
def test_fused_router_matches_torch_ops(dtype, T, E, k, normalize):
    assert fused_available(torch.zeros(T, E, dtype=dtype), k)
    g = torch.Generator().manual_seed(T * E + k)
    logits = (torch.randn(T, E, generator=g, dtype=dtype) * 3).requires_grad_()
    fused_logits = logits.detach().clone().requires_grad_()
    ref = _torch_route(logits, k, normalize)
    r = fused_softmax_topk(fused_logits, k, normalize, z_grad=True)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for name, a, b in zip(["gates", "load_balance", "z", "probs", "index", "counts"], ref,
                          [r.gates, r.load_balance, r.z, r.probs, r.index, r.counts], strict=True):
        torch.testing.assert_close(b, a.detach(), atol=tol, rtol=tol, msg=lambda m, n=name: f"{n}: {m}")
    # the pairs grouped by expert: the stable sort of the slot-major expert list (what assign_slots does),
    # and their gates in that order, which the layer multiplies by (gradient through both gate outputs)
    sorted_experts, pair_order = torch.sort(r.index.t().reshape(-1), stable=True)
    ref_sorted_gates = ref[0].t().reshape(-1)[pair_order]
    torch.testing.assert_close(r.gates_sorted, ref_sorted_gates.detach(), atol=tol, rtol=tol)
    d_gates = torch.randn(T, k, generator=g, dtype=dtype)
    d_sorted = torch.randn(T * k, generator=g, dtype=dtype)
    ((ref[0] * d_gates).sum() + (ref_sorted_gates * d_sorted).sum() + 0.3 * ref[1] + 0.7 * ref[2]).backward()
    ((r.gates * d_gates).sum() + (r.gates_sorted * d_sorted).sum() + 0.3 * r.load_balance + 0.7 * r.z).backward()
    torch.testing.assert_close(fused_logits.grad, logits.grad, atol=tol, rtol=tol)
    assert torch.equal(r.pair_order, pair_order) and torch.equal(r.sorted_experts, sorted_experts)
    assert torch.equal(r.token_order, pair_order % T)


def test_gradient_flows_only_where_asked():
    logits = torch.randn(30, 8, dtype=torch.float64, requires_grad=True)
    r = fused_softmax_topk(logits, 2, True, z_grad=False)
    assert not r.z.requires_grad and not r.probs.requires_grad and r.gates.requires_grad
    r.load_balance.backward()  # the balance loss alone: no gate gradient reaches the kernel (None, None)
    ref = logits.detach().clone().requires_grad_()
    _torch_route(ref, 2, True)[1].backward()
    torch.testing.assert_close(logits.grad, ref.grad)
    # torch's own gradient check of the whole map, gates + losses, in float64
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t: [(r := fused_softmax_topk(t, 3, True, True)).gates, r.gates_sorted, r.load_balance, r.z], (x,))


def test_ties_go_to_the_lower_expert_like_a_stable_sort():
    logits = torch.zeros(4, 6)  # every expert tied
    logits[1, 4] = logits[1, 5] = 1.0  # two tied winners
    r = fused_softmax_topk(logits, 3, True, z_grad=False)
    assert r.index.tolist() == [[0, 1, 2], [4, 5, 0], [0, 1, 2], [0, 1, 2]]
    assert torch.equal(r.index, torch.sort(-torch.softmax(logits, -1), stable=True).indices[:, :3])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_nan_logits_give_valid_distinct_experts(k):
    """A diverged router must not crash the sort or index out of bounds: the trainer stops on the NaN loss."""
    logits = torch.randn(9, 5)
    logits[0] = float("nan")
    logits[1, 2] = float("nan")
    logits[2, 0] = float("nan")
    r = fused_softmax_topk(logits, k, True, z_grad=False)
    for row in r.index.tolist():
        assert len(set(row)) == k and all(0 <= e < 5 for e in row)
    assert int(r.counts.sum()) == 9 * k and sorted(r.pair_order.tolist()) == list(range(9 * k))
    assert torch.isnan(r.z) and torch.isnan(r.probs[0]).all()


def test_when_the_fused_router_is_used():
    assert not fused_available(torch.zeros(4, 8, dtype=torch.bfloat16), 2)  # float32 / float64 only
    assert not fused_available(torch.zeros(0, 8), 2)  # no tokens: the torch ops handle T = 0
    assert not fused_available(torch.zeros(4, 16), MAX_FUSED_K + 1)  # k passes over E: only for small k
    assert fused_available(torch.zeros(4, 16), MAX_FUSED_K)


def test_turned_off_by_the_environment_and_the_layer_still_runs(monkeypatch):
    monkeypatch.setenv("MOE_PLAYGROUND_NATIVE", "0")
    assert native.kernels() is None
    assert not fused_available(torch.zeros(4, 8), 2)
    layer = MoELayer(MoEConfig(d_model=8, n_experts=4, top_k=2, expert_hidden=4))
    y, info = layer(torch.randn(10, 8))
    assert y.shape == (10, 8) and info.router_probs.shape == (10, 4)


def test_same_result_on_both_paths(monkeypatch):
    """The C path and the torch ops agree through a whole layer, forward and backward (float32)."""
    torch.manual_seed(0)
    layer = MoELayer(MoEConfig(d_model=16, n_experts=8, top_k=2, expert_hidden=8, z_loss_coef=1e-3))
    x = torch.randn(300, 16, requires_grad=True)

    def run():
        y, info = layer(x)
        grads = torch.autograd.grad((y.square().sum() + info.aux_loss), [x, *layer.parameters()])
        return y, info.aux_loss, grads

    c_path = run()
    monkeypatch.setenv("MOE_PLAYGROUND_NATIVE", "0")
    torch_path = run()
    torch.testing.assert_close(c_path[0], torch_path[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(c_path[1], torch_path[1], atol=1e-6, rtol=1e-6)
    for a, b in zip(c_path[2], torch_path[2], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@NEEDS_COMPILER
def test_build_is_cached_atomic_and_reports_a_broken_compiler(tmp_path):
    compiler = native._compiler()
    path = native.build(compiler, tmp_path)
    stamp = path.stat().st_mtime_ns
    assert native.build(compiler, tmp_path) == path and path.stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left behind
    lib = native._load(path)
    assert lib.moe_route_abi_version() == native.ABI_VERSIONS["moe_route_abi_version"]
    fake = tmp_path / "broken-cc"
    fake.write_text("#!/bin/sh\necho 'cc: fatal error: out of cheese' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="out of cheese"):
        native.build(str(fake), tmp_path / "other")
    assert list((tmp_path / "other").iterdir()) == []


def test_no_compiler_means_torch_ops(monkeypatch):
    monkeypatch.setattr(native, "_compiler", lambda: None)
    native._kernels.cache_clear()
    try:
        assert native.kernels() is None
    finally:
        native._kernels.cache_clear()
    assert (native.kernels() is not None) == (native._compiler() is not None)


def test_strided_inputs_take_a_safe_path():
    """A non-contiguous input (a view) must give what its contiguous copy gives, on the C path too."""
    torch.manual_seed(1)
    layer = MoELayer(MoEConfig(d_model=8, n_experts=4, top_k=2, expert_hidden=4))
    big = torch.randn(20, 16)
    x = big[:, ::2]  # (20, 8), stride 2
    assert not x.is_contiguous()
    y_view, _ = layer(x)
    y_copy, _ = layer(x.contiguous())
    torch.testing.assert_close(y_view, y_copy)
    assert y_view.is_contiguous()


@NEEDS_COMPILER
def test_sessions_starting_together_compile_once(tmp_path, monkeypatch):
    """A class pressing Play at once on a fresh server: every thread gets a working library, one file is built."""
    import threading

    monkeypatch.setenv("MOE_PLAYGROUND_CACHE", str(tmp_path))
    native._kernels.cache_clear()
    try:
        libs = []
        threads = [threading.Thread(target=lambda: libs.append(native.kernels())) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(libs) == 4 and all(lib is not None for lib in libs)
        assert len(list(tmp_path.iterdir())) == 1  # one library, no temporary files left
    finally:
        native._kernels.cache_clear()


@NEEDS_COMPILER
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("M", "N", "K"),
                         [(64, 128, 64), (67, 64, 70), (3, 5, 1), (1, 200, 9), (130, 33, 256), (8, 8, 0)])
@pytest.mark.parametrize("transposed_a", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_gemm_matches_torch_mm(dtype, M, N, K, transposed_a, accumulate):
    """native/experts.c's matmul: C (+)= A @ B with A read through strides (A^T for the weight gradients), over
    full 4-row x 64-column tiles, ragged row and column edges, K = 0, and C with a row stride wider than N."""
    lib = native._kernels()  # built with a compiler, whatever MOE_PLAYGROUND_NATIVE says
    g = torch.Generator().manual_seed(M * N + K)
    a = torch.randn(M, K, generator=g, dtype=dtype)
    b = torch.randn(K, N, generator=g, dtype=dtype)
    c = torch.randn(M, N + 3, generator=g, dtype=dtype)  # ldc = N + 3: only the first N columns are C
    expected = (c[:, :N] if accumulate else 0) + a @ b
    a_stored = a.t().contiguous() if transposed_a else a  # element (i, k) at i * a_row + k * a_col
    a_row, a_col = (1, M) if transposed_a else (K, 1)
    lib_gemm = native.function(lib, "gemm", dtype)
    before = c[:, N:].clone()
    lib_gemm(M, N, K, a_stored.data_ptr(), a_row, a_col, b.data_ptr(), N, c.data_ptr(), N + 3, int(accumulate))
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(c[:, :N], expected, atol=tol * max(K, 1), rtol=tol)
    assert torch.equal(c[:, N:], before)  # nothing written past N
