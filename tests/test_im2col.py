"""Compiled im2col / col2im (convblocks/kernels/im2col.py) against F.unfold and F.fold: equal values and gradients."""

import pytest
import torch
import torch.nn.functional as F
from helpers import first_then_slow, needs_kernels

from convblocks.kernels import cpu_ext, im2col

pytestmark = pytest.mark.kernels

# (N, C, H, W), kernel, stride, padding, dilation: square and not, strides, dilations, padding wider than the
# kernel reach, a 1×1 kernel and a kernel as large as the padded input.
GEOMETRIES = [
    ((2, 3, 7, 9), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((2, 5, 8, 6), (3, 3), (2, 2), (1, 1), (1, 1)),
    ((1, 4, 9, 11), (3, 5), (2, 1), (0, 2), (1, 2)),
    ((2, 3, 5, 5), (5, 5), (3, 3), (4, 4), (2, 2)),
    ((3, 2, 4, 4), (1, 1), (1, 1), (0, 0), (1, 1)),
    ((1, 2, 3, 4), (5, 6), (1, 1), (1, 1), (1, 1)),
    ((2, 16, 16, 12), (3, 3), (1, 1), (1, 1), (1, 1)),
]


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape,kernel,stride,padding,dilation", GEOMETRIES)
def test_unfold_equals_f_unfold_with_gradients(shape, kernel, stride, padding, dilation, dtype):
    """Copies, so values are equal; the gradient sums in F.fold's order, so it is equal too."""
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g, dtype=dtype, requires_grad=True)
    ours = im2col.unfold(x, kernel, dilation, padding, stride)
    ref = F.unfold(x, kernel, dilation, padding, stride)
    assert "im2col" in type(ours.grad_fn).__name__  # the compiled path, not F.unfold
    assert ours.shape == ref.shape and torch.equal(ours, ref)
    go = torch.randn(ref.shape, generator=g, dtype=dtype)
    assert torch.equal(torch.autograd.grad(ours, x, go)[0], torch.autograd.grad(ref, x, go)[0])


@needs_kernels
@pytest.mark.parametrize("shape,kernel,stride,padding,dilation", GEOMETRIES[:4])
def test_col2im_equals_f_fold(shape, kernel, stride, padding, dilation):
    g = torch.Generator().manual_seed(7)
    cols = F.unfold(torch.randn(shape, generator=g, dtype=torch.float64), kernel, dilation, padding, stride)
    cols = torch.randn(cols.shape, generator=g, dtype=torch.float64)
    args = ([*shape[-2:]], [*kernel], [*stride], [*padding], [*dilation], 0)
    assert torch.equal(im2col.col2im(cols, *args), F.fold(cols, shape[-2:], kernel, dilation, padding, stride))
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(im2col.im2col.op, (x, *args[1:]), test_utils="test_faketensor")
    torch.library.opcheck(im2col.col2im.op, (cols.requires_grad_(), *args), test_utils="test_faketensor")


@needs_kernels
@pytest.mark.parametrize("case", first_then_slow(GEOMETRIES[:4]))
def test_im2col_and_col2im_pass_opcheck(case):
    """Schema, autograd registration (each is the other's gradient), fake implementation, AOT dispatch."""
    shape, kernel, stride, padding, dilation = case
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    cols = F.unfold(x.detach(), kernel, dilation, padding, stride).requires_grad_()
    args = ([*kernel], [*stride], [*padding], [*dilation], 0)
    torch.library.opcheck(im2col.im2col.op, (x, *args))
    torch.library.opcheck(im2col.col2im.op, (cols, [*shape[-2:]], *args))


@needs_kernels
def test_second_derivatives_through_col2im_and_back():
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradgradcheck(lambda t: im2col.unfold(t, (3, 3), (1, 1), (1, 1), (2, 1)) ** 2, (x,))


def test_other_dtypes_and_no_kernel_take_f_unfold(monkeypatch):
    x = torch.randn(2, 3, 6, 5).to(torch.bfloat16)
    assert torch.equal(im2col.unfold(x, (3, 3), (1, 1), (1, 1), (1, 1)), F.unfold(x, 3, 1, 1, 1))
    monkeypatch.setattr(cpu_ext, "available", lambda: False)
    x = torch.randn(2, 3, 6, 5, requires_grad=True)
    out = im2col.unfold(x, (3, 3), (1, 1), (1, 1), (1, 1))
    assert type(out.grad_fn).__name__ == "Im2ColBackward0" and torch.equal(out, F.unfold(x, 3, 1, 1, 1))


@needs_kernels
@pytest.mark.parametrize("groups", [1, 2, 6])
def test_taps_first_rows_are_f_unfold_rows_reordered(groups):
    """Rows (group, tap, channel of the group): F.unfold's (channel, tap) rows permuted, gradients alike."""
    g = torch.Generator().manual_seed(groups)
    x = torch.randn(2, 6, 5, 7, generator=g, dtype=torch.float64, requires_grad=True)
    ours = im2col.unfold(x, (3, 2), (1, 2), (1, 1), (2, 1), taps_first_groups=groups)
    ref = F.unfold(x, (3, 2), (1, 2), (1, 1), (2, 1))
    ref = ref.view(2, groups, 6 // groups, 6, -1).transpose(2, 3).reshape(ref.shape)
    assert torch.equal(ours, ref)
    go = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    assert torch.equal(torch.autograd.grad(ours, x, go)[0], torch.autograd.grad(ref, x, go)[0])
    col2im_args = (go.requires_grad_(), [5, 7], [3, 2], [2, 1], [1, 1], [1, 2], groups)
    full = groups == 2  # one full opcheck (seconds); the fake implementation for every order
    torch.library.opcheck(im2col.col2im.op, col2im_args, **({} if full else {"test_utils": "test_faketensor"}))


@needs_kernels
@pytest.mark.parametrize("groups,order", [(1, 0), (2, 0), (2, 2)])
def test_unfold_matmul_equals_matmul_of_columns_and_keeps_no_columns(groups, order):
    """Per-sample weights times the columns: equal to matmul over ``unfold``'s columns, forward and both
    gradients; what autograd keeps is the input and the weights, not the k²-times-larger columns."""
    g = torch.Generator().manual_seed(groups + order)
    x = torch.randn(3, 6, 7, 5, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, groups, 4, 6 // groups * 9, generator=g, dtype=torch.float64, requires_grad=True)
    args = ((3, 3), (1, 2), (1, 1), (2, 1), order)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        ours = im2col.unfold_matmul(x, w, *args)
    cols = im2col.unfold(x, *args)
    ref = torch.matmul(w, cols.view(3, groups, -1, cols.shape[-1]))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    assert cols.numel() not in saved and sorted(saved) == sorted([x.numel(), w.numel()])
    go = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    expected = torch.autograd.grad(ref, (x, w), go)
    for a, b in zip(torch.autograd.grad(ours, (x, w), go), expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    (gw,) = torch.autograd.grad(im2col.unfold_matmul(x.detach(), w, *args), w, go)  # weight gradient alone
    torch.testing.assert_close(gw, expected[1], rtol=1e-12, atol=1e-12)
