"""The accelerator's C kernels (moe_core/accelerator/native): how the library is built, cached, refused and turned
off, and that the layer gives the same results with and without it."""

from __future__ import annotations

import os
import platform

import pytest
import torch

import moe_core.accelerator.kernels as native
from moe_core import MoEConfig, MoELayer, accelerator

NEEDS_COMPILER = pytest.mark.skipif(
    native._compiler() is None,
    reason="needs a C compiler (cc, gcc or clang on the PATH, or CC); CI installs gcc and requires it")


def test_the_kernels_are_built_where_a_compiler_is():
    """CI has gcc: there the C path must really run (the tests of both paths would otherwise test one twice)."""
    if os.environ.get("CI") or native._compiler() is not None:
        assert native.kernels() is not None
    if os.environ.get("CI") and platform.machine() == "x86_64":  # CI's gcc builds the AVX-512/AVX2 matmul
        assert native.kernels().moe_gemm_vectorized() == 1


def test_turned_off_by_the_environment_and_the_layer_still_runs(monkeypatch):
    monkeypatch.setenv("MOE_PLAYGROUND_NATIVE", "0")
    assert native.kernels() is None
    layer = MoELayer(MoEConfig(d_model=8, n_experts=4, top_k=2, expert_hidden=4))
    assert accelerator.forward(layer, torch.randn(10, 8), None) is None
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
    assert lib.moe_layer_abi_version() == native.ABI_VERSIONS["moe_layer_abi_version"]
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
