"""The compiled input gradient of a grouped conv (csrc/grouped_dgrad.cpp) against autograd through F.conv2d,
and its use in PyConv's backward."""

import pytest
import torch
import torch.nn.functional as F
from helpers import needs_kernels

from convblocks.kernels import grouped_conv, grouped_kernels

pytestmark = [pytest.mark.kernels, needs_kernels]


def conv_input_grad(x, weight, padding, dilation_h, groups, go):
    x = x.clone().requires_grad_()
    out = F.conv2d(x, weight, None, 1, padding, (dilation_h, 1), groups)
    return torch.autograd.grad(out, x, go)[0]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "channels,groups,outputs,k,padding,dilation_h,width",
    [
        (64, 16, 1, 9, 4, 1, 40),  # PyConv's 9×9 level: 4 channels per group; two windows and a tail
        (64, 8, 2, 7, 3, 1, 45),  # its 7×7 level
        (64, 4, 4, 5, 2, 1, 11),  # 16 channels per group; a row narrower than one window
        (48, 4, 3, 9, 3, 2, 23),  # 12 channels per group, 3 outputs; dilated rows, padding below the kernel's
        (32, 32, 1, 3, 0, 1, 20),  # depthwise, no padding: the output is wider than the gradient
        (16, 1, 2, 11, 5, 1, 30),
        (32, 16, 2, 5, 1, 3, 17),
    ],
)
def test_compiled_input_gradient_equals_autograd(dtype, channels, groups, outputs, k, padding, dilation_h, width):
    g = torch.Generator().manual_seed(channels * k + outputs)
    x = torch.randn(2, channels, 13, width, generator=g, dtype=dtype)
    weight = torch.randn(groups * outputs, channels // groups, k, k, generator=g, dtype=dtype)
    go = torch.randn_like(F.conv2d(x, weight, None, 1, padding, (dilation_h, 1), groups), dtype=dtype)
    ref = conv_input_grad(x, weight, padding, dilation_h, groups, go)
    args = (go.permute(0, 2, 3, 1).contiguous(), grouped_kernels.dgrad_weight(weight, groups), [13, width])
    ours = grouped_kernels.grouped_dgrad(*args, [padding] * 2, dilation_h, groups).permute(0, 3, 1, 2)
    tol = 1e-12 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    torch.library.opcheck(
        grouped_kernels.grouped_dgrad.op, (*args, [padding] * 2, dilation_h, groups), test_utils="test_faketensor"
    )


def test_compiled_input_gradient_names_a_size_mismatch():
    go, wf = torch.zeros(1, 8, 8, 4), torch.zeros(3, 3, 1, 16)
    with pytest.raises(RuntimeError, match="gradient size does not match the input size"):
        grouped_kernels.grouped_dgrad(go, wf, [9, 8], [1, 1], 1, 4)


def test_input_gradient_kernel_applies_only_where_built_and_faster():
    applies = grouped_kernels.dgrad_kernel_applies
    assert applies(torch.Size([16, 4, 9, 9]), (1, 1), (4, 4), (1, 1), 16)  # PyConv's 9×9 level
    assert applies(torch.Size([16, 8, 7, 7]), (1, 1), (3, 3), (2, 1), 8)  # two outputs per group, dilated rows
    assert not applies(torch.Size([16, 16, 5, 5]), (1, 1), (2, 2), (1, 1), 4)  # four outputs: oneDNN is faster
    assert not applies(torch.Size([16, 4, 9, 9]), (2, 2), (4, 4), (1, 1), 16)  # stride 2
    assert not applies(torch.Size([16, 4, 9, 9]), (1, 1), (4, 4), (1, 2), 16)  # width dilation
    assert not applies(torch.Size([16, 4, 9, 9]), (1, 1), (9, 4), (1, 1), 16)  # padding beyond the kernel
    assert not applies(torch.Size([16, 4, 1, 1]), (1, 1), (0, 0), (1, 1), 16)  # 1×1: not built
    assert not applies(torch.Size([6, 4, 9, 9]), (1, 1), (4, 4), (1, 1), 6)  # 24 channels: not whole vectors


@pytest.mark.parametrize("outputs", [1, 2])
def test_training_takes_the_compiled_input_gradient_with_equal_gradients(monkeypatch, outputs):
    calls = []
    real = grouped_conv.grouped_dgrad
    monkeypatch.setattr(grouped_conv, "grouped_dgrad", lambda *a: calls.append(1) or real(*a))
    g = torch.Generator().manual_seed(outputs)
    x = torch.randn(2, 32, 10, 19, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(8 * outputs, 4, 7, 7, generator=g, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (x, weight)]
    out = grouped_conv.conv2d_as_depthwise_sum(*leaves, None, (1, 1), (3, 3), (1, 1), 8)
    go = torch.randn_like(out)
    ours = torch.autograd.grad(out, leaves, go)
    assert calls == [1]
    ref = F.conv2d(*leaves, None, 1, 3, 1, 8)
    for a, b in zip(ours, torch.autograd.grad(ref, leaves, go), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
