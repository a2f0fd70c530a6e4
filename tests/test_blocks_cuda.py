"""CUDA path of every block: equal to the CPU result, and working under fp16/bf16 autocast.

Skipped where no CUDA device is present (CI and the 2-core development machines).
"""

import pytest
import torch
from helpers import deform

from convblocks import build_block, list_blocks

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
ALL = sorted(list_blocks())


@pytest.fixture(autouse=True)
def no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def make(name):
    torch.manual_seed(0)
    block = build_block(name, in_channels=64, out_channels=64)
    if hasattr(block, "conv_offset"):
        torch.nn.init.normal_(block.conv_offset.weight, std=0.05)
    return block


@pytest.mark.parametrize("name", ALL)
def test_cuda_equals_cpu_forward_and_backward(name):
    cpu = make(name).train()
    gpu = make(name).train().cuda()
    x = torch.randn(2, 64, 12, 10)
    xg = x.cuda().requires_grad_()
    x.requires_grad_()
    out_c, out_g = cpu(x), gpu(xg)
    torch.testing.assert_close(out_g.cpu(), out_c, rtol=1e-4, atol=1e-4)
    out_c.square().sum().backward()
    out_g.square().sum().backward()
    torch.testing.assert_close(xg.grad.cpu(), x.grad, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ALL)
def test_cuda_autocast(name, dtype):
    block = make(name).cuda().train()
    x = torch.randn(2, 64, 12, 10, device="cuda", requires_grad=True)
    ref = block(x).detach()
    with torch.autocast("cuda", dtype=dtype):
        out = block(x)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3
    out.float().square().mean().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("impl", ["native", "torchvision"])
def test_cuda_deform_functional_equals_cpu(impl):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 9, 7, generator=g)
    offset = 3 * torch.randn(2, 2 * 2 * 9, 9, 7, generator=g)
    mask = torch.rand(2, 2 * 9, 9, 7, generator=g)
    weight = torch.randn(6, 4, 3, 3, generator=g)
    ref = deform(x, offset, weight, None, 1, 1, 1, mask, impl="torchvision")
    out = deform(x.cuda(), offset.cuda(), weight.cuda(), None, 1, 1, 1, mask.cuda(), impl=impl)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)
