"""KernelOp (convblocks/kernels/kernel_op.py): the eager autograd.Function and the custom op give equal results and
gradients, and dispatch modes (FlopCounterMode, FakeTensor) and torch.compile see the op."""

import pytest
import torch
from helpers import needs_kernels
from torch.utils.flop_counter import FlopCounterMode

from convblocks import DynamicConv2d
from convblocks.kernels import im2col, kernel_mix, layout, use_backend

pytestmark = pytest.mark.kernels


def _grads(out, inputs):
    return torch.autograd.grad(out, inputs, torch.ones_like(out))


@needs_kernels
def test_eager_path_and_custom_op_agree_with_gradients():
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    args = ([3, 3], [1, 2], [1, 0], [1, 1], 0)
    eager, op = im2col.im2col(x, *args), im2col.im2col.op(x, *args)
    assert "eager" in type(eager.grad_fn).__name__ and "eager" not in type(op.grad_fn).__name__
    assert torch.equal(eager, op) and torch.equal(_grads(eager, x)[0], _grads(op, x)[0])


@needs_kernels
def test_list_input_and_output_ops_pass_every_part_its_gradient():
    parts = [torch.randn(2, 6, c, dtype=torch.float64, requires_grad=True) for c in (3, 1, 4)]
    eager, op = layout.cat_channels_first(parts), layout.cat_channels_first.op(parts)
    assert torch.equal(eager, op) and torch.equal(eager, torch.cat(parts, 2).transpose(1, 2))
    w = torch.randn(eager.shape, dtype=torch.float64)
    for a, b in zip(_grads(eager * w, parts), _grads(op * w, parts), strict=True):
        assert torch.equal(a, b)
    y = torch.randn(2, 8, 6, dtype=torch.float64, requires_grad=True)
    split = layout.split_channels_last(y, [5, 3])
    assert isinstance(split, tuple) and [p.shape[2] for p in split] == [5, 3]
    loss = (split[0] * 2).sum() + split[1].sum()
    expect = torch.cat([torch.full((2, 5, 6), 2.0), torch.ones(2, 3, 6)], 1).double()
    assert torch.equal(torch.autograd.grad(loss, y)[0], expect)


@needs_kernels
def test_flop_counter_sees_the_op():
    """FlopCounterMode is a dispatch mode: the call goes through the op and its FLOP formula."""
    pi, bank = torch.softmax(torch.randn(3, 4), 1), torch.randn(4, 50)
    with FlopCounterMode(display=False) as counter:
        kernel_mix.mix_kernels(pi, bank)
    assert counter.get_total_flops() == 2 * 3 * 4 * 50


@needs_kernels
def test_compiled_unfold_formulation_matches_eager():
    """torch.compile (AOTAutograd: fake implementations and autograd registrations) through im2col and the mix."""
    torch.manual_seed(0)
    block = DynamicConv2d(128, 8, 3, padding=1, temperature=1.0).double()
    x = torch.randn(2, 128, 5, 4, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(block, backend="aot_eager", fullgraph=True)
    with use_backend(dynamic_conv2d="unfold"):
        out, ref = compiled(x), block(x)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    params = [x, block.weight, block.fc2.weight]
    for a, b in zip(_grads(out, params), _grads(ref, params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@needs_kernels
def test_an_op_without_gradient_formula_does_not_detach_silently():
    """Called with inputs that need gradients, it goes through the custom op, whose backward raises."""
    grad, pi, bank = torch.randn(2, 6), torch.softmax(torch.randn(2, 3), 1), torch.randn(3, 6, requires_grad=True)
    gpi, _ = kernel_mix.mix_kernels_backward(grad, pi, bank)
    assert gpi.requires_grad
    with pytest.raises(RuntimeError, match="no autograd formula"):
        gpi.sum().backward()
