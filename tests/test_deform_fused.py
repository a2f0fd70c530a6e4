"""The fused CPU deformable-conv kernel (convblocks/kernels/deform_fused.py) against torchvision's deform_conv2d."""

import shutil

import pytest
import torch
import torchvision
from helpers import deform, needs_kernels
from test_deform import random_case, saved_bytes

from convblocks import ModulatedDeformConv2d
from convblocks.kernels import cpu_ext, deform_fused, deform_ops, use_backend

pytestmark = pytest.mark.kernels


@pytest.fixture
def fresh_kernel():
    """Forget the cached build result before and after the test, so a patched build does not leak."""
    cpu_ext.extension.cache_clear()
    yield
    cpu_ext.extension.cache_clear()


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="no C++ compiler")
@needs_kernels
def test_kernel_builds_where_a_compiler_is():
    assert deform_fused.kernel() is not None  # otherwise every "fused" test below silently tests "native"
    assert deform_ops._auto_impl(torch.zeros(1)) == "fused"


def grads(fn, leaves, go):
    return torch.autograd.grad(fn(*leaves), leaves, go)


@needs_kernels
@pytest.mark.parametrize("offset_groups,groups", [(1, 1), (4, 1), (2, 4)])
def test_float64_equals_torchvision_across_groups(offset_groups, groups):
    x, offset, weight, bias, stride, pad, dil, mask = random_case(
        torch.float64, c=8, cout=8, groups=groups, offset_groups=offset_groups
    )
    leaves = [t.requires_grad_() for t in (x, offset, weight, bias, mask)]
    go = torch.randn(x.shape[0], 8, *offset.shape[-2:], dtype=torch.float64)
    ours = grads(lambda *a: deform(*a[:4], stride, pad, dil, a[4], impl="fused"), leaves, go)
    ref = grads(lambda *a: torchvision.ops.deform_conv2d(*a[:4], stride, pad, dil, a[4]), leaves, go)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@needs_kernels
def test_integer_positions_on_the_border_follow_torchvision():
    """Integer offsets put taps on the bilinear kinks, some exactly at -1 (no value, but a one-sided offset
    gradient from the pixel at 0). ``fused`` takes torchvision's side everywhere; grid_sample's rounding
    does not (``native`` differs here by up to 68)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 7, 6, generator=g, dtype=torch.float64)
    w = torch.randn(8, 8, 3, 3, generator=g, dtype=torch.float64)
    off = torch.zeros(2, 18, 7, 6, dtype=torch.float64)
    off[:, :, ::2] = 1.0
    mask = torch.rand(2, 9, 7, 6, generator=g, dtype=torch.float64)
    leaves = [t.requires_grad_() for t in (x, off, w, mask)]
    go = torch.randn(2, 8, 7, 6, generator=g, dtype=torch.float64)
    ours = grads(lambda a, o, b, m: deform(a, o, b, None, 1, 1, 1, m, impl="fused"), leaves, go)
    ref = grads(lambda a, o, b, m: torchvision.ops.deform_conv2d(a, o, b, None, 1, 1, 1, m), leaves, go)
    assert ref[1].abs().max() > 0
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@needs_kernels
@pytest.mark.parametrize("wanted", [("x",), ("offset", "weight", "mask")])
def test_only_requested_gradients_and_dtypes_come_back(wanted):
    """Only some inputs need gradients (a frozen layer; the network's first layer, whose input has none)."""
    x, offset, weight, bias, stride, pad, dil, mask = random_case(torch.float32)
    named = {"x": x, "offset": offset, "weight": weight, "mask": mask}
    leaves = [named[k].requires_grad_() for k in wanted]
    ours = torch.autograd.grad(deform(x, offset, weight, bias, stride, pad, dil, mask, impl="fused").sum(), leaves)
    ref = torch.autograd.grad(
        torchvision.ops.deform_conv2d(x, offset, weight, bias, stride, pad, dil, mask).sum(), leaves
    )
    for a, b, leaf in zip(ours, ref, leaves, strict=True):
        assert a.dtype == torch.float32 and a.shape == leaf.shape
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@needs_kernels
def test_keeps_no_columns_for_backward():
    x, offset, weight, bias, stride, pad, dil, mask = random_case(c=32, cout=32, hw=(24, 20), groups=1)
    for t in (x, offset, weight, mask):
        t.requires_grad_()
    ours = saved_bytes(lambda: deform(x, offset, weight, bias, stride, pad, dil, mask, impl="fused"))
    columns = x.shape[0] * 32 * 9 * offset.shape[-2] * offset.shape[-1] * 4
    assert ours < columns / 2  # input (channels-last copy), offsets, mask and weight only


def test_without_the_kernel_fused_falls_back_to_native(monkeypatch):
    monkeypatch.setattr(deform_fused, "kernel", lambda: None)
    assert deform_ops._auto_impl(torch.zeros(1)) == "native"
    x, offset, weight, bias, stride, pad, dil, mask = random_case(torch.float64)
    ours = deform(x, offset, weight, bias, stride, pad, dil, mask, impl="fused")
    ref = torchvision.ops.deform_conv2d(x, offset, weight, bias, stride, pad, dil, mask)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_a_failed_build_warns_once_and_returns_none(monkeypatch, fresh_kernel):
    monkeypatch.delenv("CONVZOO_CPU_KERNELS", raising=False)  # the default run may switch the kernels off
    import torch.utils.cpp_extension as cpp

    def broken(**kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions\nmore detail")

    monkeypatch.setattr(cpp, "load", broken)
    with pytest.warns(UserWarning, match=r"could not be built \(Ninja is required to load C\+\+ extensions\)"):
        assert deform_fused.kernel() is None
    assert deform_fused.kernel() is None  # cached: no second build, no second warning


def test_switched_off_by_environment(monkeypatch, fresh_kernel):
    monkeypatch.setenv("CONVZOO_DEFORM_KERNEL", "0")
    assert deform_fused.kernel() is None
    assert deform_ops._auto_impl(torch.zeros(1)) == "native"


def test_auto_uses_native_while_tracing(monkeypatch):
    seen = []
    monkeypatch.setattr(torch.jit, "is_tracing", lambda: seen.append(1) or True)
    assert deform_ops._auto_impl(torch.zeros(1)) == "native" and seen


def test_explicit_fused_block_traces_through_native():
    """The ``fused`` backend asked for by name still gives a trace that recomputes from its input."""
    block = ModulatedDeformConv2d(8, 8, 3)
    torch.nn.init.normal_(block.conv_offset.weight, std=0.1)
    x, other = torch.randn(2, 8, 9, 7), torch.randn(2, 8, 9, 7)
    with torch.no_grad(), use_backend(deform_conv2d="fused"):
        traced = torch.jit.trace(block, x, check_trace=False)
        torch.testing.assert_close(traced(other), block(other), rtol=1e-5, atol=1e-5)


@needs_kernels
def test_custom_ops_pass_opcheck():
    """Schema, fake (meta) implementation and autograd registration of both ops, as torch.compile needs them."""
    g = torch.Generator().manual_seed(0)
    xl = torch.randn(2, 7, 6, 8, generator=g, dtype=torch.float64)  # NHWC
    off = torch.randn(2, 18, 7, 6, generator=g, dtype=torch.float64)
    m = torch.rand(2, 9, 7, 6, generator=g, dtype=torch.float64)
    w = torch.randn(4, 4, 3, 3, generator=g, dtype=torch.float64)  # 2 conv groups: 4 → 2 channels each
    geometry = ([1, 1], [1, 1], [1, 1], torch.float64)
    for mask in (m, None):
        leaves = [t.clone().requires_grad_() for t in (xl, off, w)]
        mask = None if mask is None else mask.clone().requires_grad_()
        torch.library.opcheck(deform_fused.deform_fused.op, (leaves[0], leaves[1], mask, leaves[2], *geometry))
        go = torch.randn(2, 4, 42, generator=g, dtype=torch.float64)
        needs = [True, False, mask is not None, True]
        plain_mask = None if mask is None else m
        torch.library.opcheck(deform_fused.deform_fused_backward.op, (go, xl, off, plain_mask, w, *geometry, needs))


@needs_kernels
def test_torch_compile_runs_the_fused_op_with_eager_results():
    torch.manual_seed(0)
    block = ModulatedDeformConv2d(8, 8, 3)
    torch.nn.init.normal_(block.conv_offset.weight, std=0.3)
    x = torch.randn(2, 8, 9, 7, requires_grad=True)
    targets = []

    def recording_backend(gm, example_inputs):
        targets.extend(str(node.target) for node in gm.graph.nodes if node.op == "call_function")
        return gm.forward

    leaves = [x, *block.parameters()]
    eager = torch.autograd.grad(block(x).square().sum(), leaves)
    compiled = torch.compile(block, backend=recording_backend, fullgraph=True)
    ours = torch.autograd.grad(compiled(x).square().sum(), leaves)
    assert "convzoo.deform_fused.default" in targets and not any("grid_sampler" in t for t in targets)
    for a, b in zip(ours, eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@needs_kernels
def test_flop_counter_counts_the_fused_gemm_like_the_reference_matmul():
    from torch.utils.flop_counter import FlopCounterMode

    x, offset, weight, bias, stride, pad, dil, mask = random_case(torch.float32, groups=2)
    counts = []
    for impl in ("fused", "reference"):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            deform(x, offset, weight, bias, stride, pad, dil, mask, impl=impl)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0
