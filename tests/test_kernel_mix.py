"""Dynamic conv's kernel mixing π @ bank through the compiled kernel (kernels/kernel_mix.py) against matmul."""

import pytest
import torch
from helpers import first_then_slow, needs_kernels

from convblocks import DynamicConv2d
from convblocks.kernels import cpu_ext, dynamic_conv, kernel_mix

pytestmark = pytest.mark.kernels


MIX_CASES = [(3, 4, 1000), (1, 2, 37), (5, 8, 530), (2, 3, 1025), (4, 1, 7)]


@needs_kernels
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("n,k,p", MIX_CASES)
def test_mix_and_both_gradients_equal_matmul(n, k, p, dtype):
    """K = 2, 4, 8 take the unrolled loops, 1 and 3 the generic one; P off the chunk and vector sizes."""
    g = torch.Generator().manual_seed(n * k + p)
    pi = torch.randn(n, k, generator=g, dtype=dtype, requires_grad=True)
    bank = torch.randn(k, p, generator=g, dtype=dtype, requires_grad=True)
    go = torch.randn(n, p, generator=g, dtype=dtype)
    ours = kernel_mix.mix_kernels(pi, bank)
    ref = pi @ bank
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    for a, b in zip(torch.autograd.grad(ours, (pi, bank), go), torch.autograd.grad(ref, (pi, bank), go), strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    torch.library.opcheck(kernel_mix.mix_kernels_op.op, (pi, bank), test_utils="test_faketensor")
    torch.library.opcheck(
        kernel_mix.mix_kernels_backward.op, (go, pi.detach(), bank.detach()), test_utils="test_faketensor"
    )


@needs_kernels
@pytest.mark.parametrize("case", first_then_slow(MIX_CASES))
def test_mix_ops_pass_opcheck(case):
    """Schema, autograd registration, fake implementations and AOT dispatch (seconds per call)."""
    n, k, p = case
    pi = torch.randn(n, k, dtype=torch.float64, requires_grad=True)
    bank = torch.randn(k, p, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(kernel_mix.mix_kernels_op.op, (pi, bank))
    go = torch.randn(n, p, dtype=torch.float64)
    torch.library.opcheck(kernel_mix.mix_kernels_backward.op, (go, pi.detach(), bank.detach()))


@needs_kernels
def test_dynamic_conv_trains_through_the_kernel_with_matmul_results(monkeypatch):
    calls = []
    real = kernel_mix.mix_kernels_op
    monkeypatch.setattr(kernel_mix, "mix_kernels_op", lambda *a: calls.append(1) or real(*a))
    block = DynamicConv2d(8, 6, 3, padding=1, temperature=1.0).double()
    x = torch.randn(3, 8, 7, 5, dtype=torch.float64)

    def run():
        block.zero_grad()
        out = block(x)
        out.square().sum().backward()
        return out, *(p.grad.clone() for p in block.parameters())

    ours = run()
    assert calls == [1]
    monkeypatch.setattr(dynamic_conv, "mix_kernels", lambda pi, bank: pi @ bank)
    for a, b in zip(ours, run(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_mix_falls_back_to_matmul(monkeypatch):
    """No extension, bf16 or autocast: plain ``π @ bank`` (the custom op is never reached)."""
    monkeypatch.setattr(kernel_mix, "mix_kernels_op", None)
    pi, bank = torch.randn(2, 4), torch.randn(4, 9)
    low = pi.bfloat16(), bank.bfloat16()
    assert torch.equal(kernel_mix.mix_kernels(*low), low[0] @ low[1])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernel_mix.mix_kernels(pi, bank).dtype == torch.bfloat16
    monkeypatch.setattr(cpu_ext, "extension", lambda: None)
    torch.testing.assert_close(kernel_mix.mix_kernels(pi, bank), pi @ bank)
