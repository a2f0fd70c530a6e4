"""Equivalent formulations of a grouped conv (convblocks/kernels/grouped_conv.py) against F.conv2d, and PyConv."""

import pytest
import torch
import torch.nn.functional as F
from helpers import first_then_slow, needs_kernels

from convblocks import BlockConfigError, PyConv2d, build_block
from convblocks.kernels import cpu_ext, grouped_conv, grouped_kernels, pyconv_ops, set_backend, use_backend

pytestmark = pytest.mark.kernels


def grads_of(fn, leaves, go):
    out = fn(*leaves)
    return (out, *torch.autograd.grad(out, leaves, go))


def check_equal(ours_fn, ref_fn, x, weight, bias):
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    go = torch.randn_like(ref_fn(*leaves))
    for a, b in zip(grads_of(ours_fn, leaves, go), grads_of(ref_fn, leaves, go), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(
    "k,groups,cout,padding,dilation",
    [
        (3, 1, 6, 1, 1),
        (5, 4, 8, 2, 1),
        (7, 8, 16, 3, 1),
        (5, 2, 4, 1, 2),
        (3, 4, 8, 0, 1),
        (3, 1, 6, 2, 1),
        (9, 16, 32, 4, 1),
    ],
)
def test_transposed_form_equals_conv2d(fmt, k, groups, cout, padding, dilation):
    g = torch.Generator().manual_seed(k * groups)
    x = torch.randn(2, 16, 11, 9, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
    weight = torch.randn(cout, 16 // groups, k, k, generator=g, dtype=torch.float64)
    bias = torch.randn(cout, generator=g, dtype=torch.float64)
    pad, dil = (padding, padding), (dilation, dilation)
    check_equal(
        lambda a, w, b: grouped_conv.conv2d_as_transposed(a, w, b, pad, dil, groups),
        lambda a, w, b: F.conv2d(a, w, b, 1, pad, dil, groups),
        x,
        weight,
        bias,
    )


def test_transposed_form_refuses_padding_beyond_the_kernel():
    assert grouped_conv.transposed_padding((3, 3), (3, 1), (1, 1)) is None
    assert grouped_conv.transposed_padding((5, 3), (2, 1), (1, 2)) == (2, 3)
    with pytest.raises(ValueError, match="no transposed form"):
        grouped_conv.conv2d_as_transposed(torch.zeros(1, 4, 5, 5), torch.zeros(4, 4, 3, 3), None, (3, 3), (1, 1), 1)


@pytest.mark.parametrize("compiled", [True, False], ids=["kernels", "pytorch"])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(
    "stride,padding,dilation,outputs", [(1, 4, 1, 1), (2, 3, 1, 1), (1, 8, 2, 1), (1, 4, 1, 2), (2, 3, 1, 3)]
)
def test_depthwise_sum_form_equals_conv2d(monkeypatch, compiled, fmt, stride, padding, dilation, outputs):
    """One depthwise conv and group sum per output of a group; with the extension, the compiled sums and the
    hand-written backward (one output: compiled weight gradient; more: transposed at stride 1, else direct)."""
    if compiled and not cpu_ext.available():
        pytest.skip("the CPU extension could not be built here")
    if not compiled:
        monkeypatch.setattr(cpu_ext, "extension", lambda: None)
    g = torch.Generator().manual_seed(stride + padding + outputs)
    x = torch.randn(2, 16, 12, 9, generator=g, dtype=torch.float64).contiguous(memory_format=fmt)
    weight = torch.randn(4 * outputs, 4, 9, 9, generator=g, dtype=torch.float64)  # 4 groups of 4 channels
    bias = torch.randn(4 * outputs, generator=g, dtype=torch.float64)
    s, p, d = (stride,) * 2, (padding,) * 2, (dilation,) * 2
    check_equal(
        lambda a, w, b: grouped_conv.conv2d_as_depthwise_sum(a, w, b, s, p, d, 4),
        lambda a, w, b: F.conv2d(a, w, b, s, p, d, 4),
        x,
        weight,
        bias,
    )
    if compiled:  # the compiled path keeps the input's layout, so the next layer needs no copy
        assert grouped_conv.conv2d_as_depthwise_sum(x, weight, bias, s, p, d, 4).is_contiguous(memory_format=fmt)
    with pytest.raises(ValueError, match="C_out a multiple of groups"):
        grouped_conv.conv2d_as_depthwise_sum(x, weight[:3], None, s, p, d, 4)


def test_weight_from_transposed_inverts_transposed_weight():
    weight = torch.randn(8, 4, 5, 3)
    back = grouped_conv.weight_from_transposed(grouped_conv.transposed_weight(weight, 4), 4)
    assert torch.equal(back, weight)


def test_pyconv_uses_the_fast_forms_in_training_with_direct_results(monkeypatch):
    """64 channels: with the extension, levels 2-4 (5×5, 7×7, 9×9: 4, 2, 1 outputs per group) run the compiled
    one-pass forward; without it, levels 2-3 go transposed in training and level 4 as a depthwise conv and
    sums. Results and gradients equal the ``direct`` backend's. Without gradients, no transposed form."""
    used, compiled = [], []
    for name in ("conv2d_as_transposed", "conv2d_as_depthwise_sum"):
        real = getattr(pyconv_ops, name)
        monkeypatch.setattr(pyconv_ops, name, lambda *a, _real=real, _name=name: used.append(_name) or _real(*a))
    real_forward = grouped_conv.grouped_forward
    monkeypatch.setattr(grouped_conv, "grouped_forward", lambda *a: compiled.append(a[1].shape) or real_forward(*a))
    block = PyConv2d(64, 64, 3).double()
    x = torch.randn(2, 64, 10, 8, dtype=torch.float64)
    leaves_fast = [x.clone().requires_grad_(), *block.parameters()]
    leaves_direct = [x.clone().requires_grad_(), *block.parameters()]
    go = torch.randn(2, 64, 10, 8, dtype=torch.float64)
    a = grads_of(lambda *_: block(leaves_fast[0]), leaves_fast, go)
    with use_backend(pyconv2d="direct"):
        b = grads_of(lambda *_: block(leaves_direct[0]), leaves_direct, go)
    if cpu_ext.available():
        assert used == ["conv2d_as_depthwise_sum"] * 3
        assert compiled == [(5, 5, 4, 64), (7, 7, 2, 64), (9, 9, 1, 64)]  # (kh, kw, outputs per group, channels)
    else:
        assert used == ["conv2d_as_transposed", "conv2d_as_transposed", "conv2d_as_depthwise_sum"]
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-10)
    used.clear()
    with torch.no_grad():
        fast = block(x)
        with use_backend(pyconv2d="direct"):
            torch.testing.assert_close(fast, block(x), rtol=1e-10, atol=1e-10)
    assert used == ["conv2d_as_depthwise_sum"] * (3 if cpu_ext.available() else 1)


def test_pyconv_rejects_an_implementation_argument_and_an_unknown_backend():
    with pytest.raises(BlockConfigError, match="block 'pyconv' takes no 'impl': .*set_backend"):
        build_block("pyconv", in_channels=16, out_channels=16, impl="direct")
    with pytest.raises(ValueError, match="pyconv2d backend must be one of auto, direct, reference"):
        set_backend("pyconv2d", "fast")


WGRAD_CASES = [
    (64, 16, 1, 9, 1, 4, 1, 11),
    (40, 8, 1, 5, 2, 1, 1, 11),
    (24, 24, 1, 3, 1, 2, 2, 11),
    (36, 4, 1, 7, 2, 3, 1, 11),
    (20, 2, 1, 11, 1, 5, 1, 11),
    (64, 8, 2, 7, 1, 3, 1, 45),  # PyConv's 7x7 level; rows wider than the register window, with a tail
    (64, 4, 4, 5, 1, 2, 1, 37),
    (48, 16, 1, 9, 1, 4, 1, 40),
    (32, 8, 2, 3, 1, 0, 1, 35),  # no padding: every window inside the row
    (36, 4, 2, 3, 1, 1, 1, 30),  # 9 channels per group: off the vector, the tail loop
]


def wgrad_case(dtype, channels, groups, outputs, k, stride, padding, dilation, width):
    """The kernel's arguments (NHWC gradient and input, geometry) and oneDNN's weight gradient for them."""
    g = torch.Generator().manual_seed(channels + k)
    x = torch.randn(2, channels, 13, width, generator=g, dtype=dtype)
    weight = torch.randn(groups * outputs, channels // groups, k, k, generator=g, dtype=dtype)
    s, p, d = [stride] * 2, [padding] * 2, [dilation] * 2
    go = torch.randn_like(F.conv2d(x, weight, None, s, p, d, groups))
    ref = torch.ops.aten.convolution_backward(go, x, weight, None, s, p, d, False, [0, 0], groups, [False, True, False])
    nhwc = (go.permute(0, 2, 3, 1).contiguous(), x.permute(0, 2, 3, 1).contiguous())
    return (*nhwc, [k, k], s, p, d, groups), ref[1]


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channels,groups,outputs,k,stride,padding,dilation,width", WGRAD_CASES)
def test_compiled_weight_gradient_equals_onednn(dtype, channels, groups, outputs, k, stride, padding, dilation, width):
    """Channel counts off the register vector (4, 8 or 16 lanes: 36, 20) exercise the tail loop; the fake
    implementation gives every case's shape (the full ``opcheck`` below)."""
    args, ref = wgrad_case(dtype, channels, groups, outputs, k, stride, padding, dilation, width)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(grouped_kernels.grouped_wgrad(*args), ref, rtol=tol, atol=tol)
    torch.library.opcheck(grouped_kernels.grouped_wgrad.op, args, test_utils="test_faketensor")


@needs_kernels
@pytest.mark.parametrize("case", first_then_slow(WGRAD_CASES))
def test_compiled_weight_gradient_passes_opcheck(case):
    """Schema, autograd registration, fake implementation and AOT dispatch with dynamic shapes (seconds each)."""
    torch.library.opcheck(grouped_kernels.grouped_wgrad.op, wgrad_case(torch.float64, *case)[0])


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "channels,groups,outputs,k,padding,dilation_h",
    [
        (64, 16, 1, 9, 4, 1),  # PyConv's 9×9 level: 4 channels per group, summed within a vector
        (64, 8, 2, 7, 3, 1),
        (64, 4, 4, 5, 2, 1),  # 16 channels per group: whole vectors
        (48, 4, 2, 9, 3, 2),  # 12 channels per group: the scalar sum; dilated rows, padding below the kernel's
        (32, 32, 1, 3, 0, 1),
        (16, 1, 4, 3, 1, 1),
        (32, 16, 2, 5, 2, 1),
    ],
)
def test_compiled_grouped_forward_equals_conv2d(dtype, channels, groups, outputs, k, padding, dilation_h):
    """The one-pass forward at stride 1, on a 13×11 map (windows run past the row's end), against ``F.conv2d``."""
    g = torch.Generator().manual_seed(channels * k + outputs)
    x = torch.randn(2, channels, 13, 11, generator=g, dtype=dtype)
    weight = torch.randn(groups * outputs, channels // groups, k, k, generator=g, dtype=dtype)
    assert grouped_kernels.forward_kernel_applies(weight.shape, (1, 1), (dilation_h, 1), groups)
    ref = F.conv2d(x, weight, None, 1, padding, (dilation_h, 1), groups)
    args = (x.permute(0, 2, 3, 1).contiguous(), grouped_kernels.forward_weight(weight, groups), [padding] * 2)
    ours = grouped_kernels.grouped_forward(*args, dilation_h, groups).permute(0, 3, 1, 2)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    torch.library.opcheck(grouped_kernels.grouped_forward.op, (*args, dilation_h, groups), test_utils="test_faketensor")


def test_grouped_forward_applies_only_where_built():
    applies = grouped_kernels.forward_kernel_applies
    assert applies(torch.Size([16, 16, 5, 5]), (1, 1), (1, 1), 4)  # 4 outputs per group, 5×5
    assert not applies(torch.Size([32, 8, 5, 5]), (1, 1), (1, 1), 4)  # 8 outputs per group
    assert not applies(torch.Size([16, 4, 9, 9]), (2, 2), (1, 1), 16)  # stride 2
    assert not applies(torch.Size([16, 4, 9, 9]), (1, 1), (1, 2), 16)  # width dilation
    assert not applies(torch.Size([6, 4, 9, 9]), (1, 1), (1, 1), 6)  # 24 channels: not whole vectors


@needs_kernels
@pytest.mark.parametrize("outputs,takes_kernel", [(1, True), (2, True), (4, False)])
def test_training_takes_the_compiled_weight_gradient_and_falls_back_without_it(monkeypatch, outputs, takes_kernel):
    """Up to WGRAD_MAX_OUTPUTS outputs per group the compiled weight gradient; above, and without the
    extension, oneDNN's: the same gradients."""
    calls = []
    real = grouped_conv.grouped_wgrad
    monkeypatch.setattr(grouped_conv, "grouped_wgrad", lambda *a: calls.append(1) or real(*a))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 10, 9, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(4 * outputs, 4, 9, 9, generator=g, dtype=torch.float64)
    bias = torch.randn(4 * outputs, generator=g, dtype=torch.float64)
    geometry = ((1, 1), (4, 4), (1, 1))

    def run():
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        out = grouped_conv.conv2d_as_depthwise_sum(*leaves, *geometry, 4)
        return (out, *torch.autograd.grad(out.square().sum(), leaves))

    with_kernel = run()
    assert calls == ([1] if takes_kernel else [])
    monkeypatch.setattr(cpu_ext, "extension", lambda: None)
    without = run()
    assert calls == ([1] if takes_kernel else [])
    for a, b in zip(with_kernel, without, strict=True):  # the fallback is checked against F.conv2d above
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


GROUP_CASES = [(64, 16), (64, 8), (32, 16), (64, 4), (30, 10), (16, 1), (12, 12)]


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels,groups", GROUP_CASES)
def test_compiled_group_sum_and_repeat_equal_torch(dtype, channels, groups):
    """Group sizes 4, 8, 2, 16 (unrolled), 3 (generic loop) and 1, and the inverse ``group_repeat`` (its
    gradient, checked through autograd in the ``opcheck`` test below)."""
    z = torch.randn(3, 5, 7, channels, generator=torch.Generator().manual_seed(channels), dtype=dtype)
    ours = grouped_kernels.group_sum(z, groups)
    torch.testing.assert_close(ours, z.unflatten(-1, (groups, -1)).sum(-1))
    y = torch.randn(3, 5, 7, groups, generator=torch.Generator().manual_seed(groups), dtype=dtype)
    repeated = grouped_kernels.group_repeat(y, channels // groups)
    assert torch.equal(repeated, y.repeat_interleave(channels // groups, dim=-1))
    z.requires_grad_(), y.requires_grad_()
    torch.library.opcheck(grouped_kernels.group_sum.op, (z, groups), test_utils="test_faketensor")
    torch.library.opcheck(grouped_kernels.group_repeat.op, (y, channels // groups), test_utils="test_faketensor")


@needs_kernels
@pytest.mark.parametrize("case", first_then_slow(GROUP_CASES))
def test_compiled_group_sum_and_repeat_pass_opcheck(case):
    """Autograd registration (each is the other's gradient), fake implementations and AOT dispatch."""
    channels, groups = case
    z = torch.randn(3, 5, 7, channels, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 5, 7, groups, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(grouped_kernels.group_sum.op, (z, groups))
    torch.library.opcheck(grouped_kernels.group_repeat.op, (y, channels // groups))
