"""Layout changes through the compiled transpose (convblocks/kernels/layout.py) against Tensor.contiguous."""

import pytest
import torch
from helpers import needs_kernels

from convblocks.kernels import cpu_ext, layout

pytestmark = pytest.mark.kernels
CL, NCHW = torch.channels_last, torch.contiguous_format


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 64, 13, 11), (3, 5, 9, 17), (1, 16, 1, 1), (2, 3, 8, 8)])
@pytest.mark.parametrize("src,dst", [(NCHW, CL), (CL, NCHW)])
def test_layout_change_equals_contiguous_with_gradients(dtype, shape, src, dst, monkeypatch):
    """Tile-sized and ragged shapes; values, layout and gradient equal ``contiguous``'s, through the kernel."""
    calls = []
    real = layout.transpose_last
    monkeypatch.setattr(layout, "transpose_last", lambda t: calls.append(t.shape) or real(t))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape))).to(dtype).contiguous(memory_format=src)
    x.requires_grad_()
    ours = layout.to_memory_format(x, dst)
    ref = x.detach().contiguous(memory_format=dst)
    assert torch.equal(ours, ref) and ours.is_contiguous(memory_format=dst) and ours.stride() == ref.stride()
    go = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    (gx,) = torch.autograd.grad(ours, x, go)
    assert torch.equal(gx, go)
    assert len(calls) == (0 if x.is_contiguous(memory_format=dst) else 2)  # forward and backward


@needs_kernels
def test_transpose_last_opcheck_and_values():
    x = torch.randn(3, 10, 7, dtype=torch.float64, requires_grad=True)
    assert torch.equal(layout.transpose_last(x), x.transpose(1, 2))
    torch.library.opcheck(layout.transpose_last.op, (x,))


def test_layout_change_without_the_kernel_or_for_other_tensors(monkeypatch):
    """No extension, an integer tensor or a 3-d one: plain ``contiguous``; an input already in layout: itself."""
    x = torch.randn(2, 4, 3, 5)
    assert layout.to_memory_format(x, NCHW) is x
    for t in (torch.arange(120).view(2, 4, 3, 5), torch.randn(4, 3, 5)):
        fmt = CL if t.dim() == 4 else NCHW
        assert torch.equal(layout.to_memory_format(t.transpose(-1, -2), fmt), t.transpose(-1, -2).contiguous())
    monkeypatch.setattr(cpu_ext, "extension", lambda: None)
    monkeypatch.setattr(layout, "transpose_last", None)  # any call would fail
    out = layout.to_memory_format(x, CL)
    assert torch.equal(out, x) and out.is_contiguous(memory_format=CL)


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("hw", [(5, 7), (16, 8), (1, 1)])
def test_cat_to_nchw_equals_cat_with_gradients(dtype, hw, monkeypatch):
    """Channels-last parts of ragged widths into one NCHW tensor in one pass; gradients split back."""
    calls = []
    real = layout.cat_channels_first
    monkeypatch.setattr(layout, "cat_channels_first", lambda parts: calls.append(len(parts)) or real(parts))
    g = torch.Generator().manual_seed(hw[0])
    parts = [torch.randn(3, c, *hw, generator=g).to(dtype).contiguous(memory_format=CL) for c in (4, 9, 16, 1)]
    parts = [p.requires_grad_() for p in parts]
    ours, ref = layout.cat_to_memory_format(parts, NCHW), torch.cat(parts, 1)
    assert calls == [4] and torch.equal(ours, ref) and ours.is_contiguous()
    go = torch.randn(ref.shape, generator=g).to(dtype)
    for a, b in zip(torch.autograd.grad(ours, parts, go), torch.autograd.grad(ref, parts, go), strict=True):
        assert torch.equal(a, b)
    flat = [p.detach().permute(0, 2, 3, 1).reshape(3, hw[0] * hw[1], -1) for p in parts]
    torch.library.opcheck(real.op, (flat,))
    torch.library.opcheck(layout.split_channels_last.op, (ours.detach().flatten(2), [4, 9, 16, 1]))


def test_cat_to_memory_format_falls_back_for_other_layouts():
    """NCHW parts, a channels-last target or mixed dtypes take ``torch.cat`` (and ``to_memory_format``)."""
    a, b = torch.randn(2, 3, 4, 5), torch.randn(2, 2, 4, 5)
    assert torch.equal(layout.cat_to_memory_format([a, b], NCHW), torch.cat([a, b], 1))
    cl = [t.contiguous(memory_format=CL) for t in (a, b)]
    out = layout.cat_to_memory_format(cl, CL)
    assert out.is_contiguous(memory_format=CL) and torch.equal(out, torch.cat([a, b], 1))
    mixed = layout.cat_to_memory_format([cl[0], cl[1].double()], NCHW)
    assert mixed.dtype == torch.float64 and mixed.is_contiguous()
