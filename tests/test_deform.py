"""Deformable conv blocks against torchvision's deform_conv2d and a plain convolution."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from helpers import deform

from convblocks import DeformConv2d, ModulatedDeformConv2d, build_block, deform_conv2d, param_groups
from convblocks.kernels import deform_fused, deform_native, use_backend

pytestmark = pytest.mark.kernels  # the blocks on top of the compiled kernels, where built

IMPLS = ["fused", "native", "reference", "torchvision"]


def random_case(
    dtype=torch.float32,
    n=2,
    c=8,
    cout=6,
    hw=(9, 7),
    k=(3, 3),
    stride=(2, 1),
    pad=(1, 2),
    dil=(1, 2),
    groups=2,
    offset_groups=2,
    seed=0,
):
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    ho = (h + 2 * pad[0] - dil[0] * (k[0] - 1) - 1) // stride[0] + 1
    wo = (w + 2 * pad[1] - dil[1] * (k[1] - 1) - 1) // stride[1] + 1
    kk = k[0] * k[1]
    x = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    weight = torch.randn(cout, c // groups, *k, generator=g, dtype=dtype)
    bias = torch.randn(cout, generator=g, dtype=dtype)
    offset = 3 * torch.randn(n, 2 * offset_groups * kk, ho, wo, generator=g, dtype=dtype)  # reaches past borders
    mask = torch.rand(n, offset_groups * kk, ho, wo, generator=g, dtype=dtype)
    return x, offset, weight, bias, stride, pad, dil, mask


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("modulated", [False, True])
def test_functional_equals_torchvision_forward_and_backward(impl, modulated):
    x, offset, weight, bias, stride, pad, dil, mask = random_case(torch.float64)
    mask = mask if modulated else None
    leaves = [t.requires_grad_() for t in (x, offset, weight, bias)] + ([mask.requires_grad_()] if modulated else [])
    ours = deform(x, offset, weight, bias, stride, pad, dil, mask, impl=impl)
    ref = torchvision.ops.deform_conv2d(x, offset, weight, bias, stride, pad, dil, mask)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    go = torch.randn_like(ref)
    g_ours = torch.autograd.grad(ours, leaves, go)
    g_ref = torch.autograd.grad(ref, leaves, go)
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("impl", ["fused", "native"])
def test_float32_equals_torchvision_at_1e5(impl):
    x, offset, weight, bias, stride, pad, dil, mask = random_case(torch.float32, c=16, cout=16, hw=(12, 10))
    ours = deform(x, offset, weight, bias, stride, pad, dil, mask, impl=impl)
    ref = torchvision.ops.deform_conv2d(x, offset, weight, bias, stride, pad, dil, mask)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_float64(impl):
    x, offset, weight, bias, stride, pad, dil, mask = random_case(
        torch.float64,
        n=1,
        c=2,
        cout=2,
        hw=(4, 3),
        groups=1,
        offset_groups=1,
        stride=(1, 1),
        pad=(1, 1),
        dil=(1, 1),
    )
    offset = offset * 0.3 + 0.37  # keep sample points off the integer grid, where bilinear has kinks
    args = [t.requires_grad_() for t in (x, offset, weight, bias, mask)]
    fn = lambda x, o, w, b, m: deform(x, o, w, b, stride, pad, dil, m, impl=impl)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name", ["deform", "dcnv2"])
@pytest.mark.parametrize("impl", IMPLS)
def test_block_at_init_equals_conv_with_same_weights(name, impl):
    opts = {"mask_act": "2sigmoid"} if name == "dcnv2" else {}
    block = build_block(
        name,
        in_channels=8,
        out_channels=12,
        kernel_size=3,
        stride=2,
        dilation=2,
        groups=2,
        deform_groups=4,
        **opts,
    )
    x = torch.randn(2, 8, 11, 9)
    ref = F.conv2d(x, block.weight, block.bias, block.stride, block.padding, block.dilation, block.groups)
    with use_backend(deform_conv2d=impl):
        torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)


def test_dcnv2_sigmoid_mask_is_half_at_init():
    block = ModulatedDeformConv2d(4, 4, 3)
    x = torch.randn(1, 4, 6, 6)
    offset, mask = block.offsets(x)
    assert torch.all(offset == 0) and torch.all(mask == 0.5)
    ref = F.conv2d(x, block.weight, None, 1, 1) * 0.5 + block.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", [DeformConv2d, ModulatedDeformConv2d])
def test_block_equals_torchvision_with_its_own_predicted_offsets(cls):
    block = cls(8, 8, 3, deform_groups=2)
    nn.init.normal_(block.conv_offset.weight, std=0.3)  # non-trivial offsets and mask
    x = torch.randn(2, 8, 10, 7)
    offset, mask = block.offsets(x)
    assert offset.abs().max() > 0.5
    ref = torchvision.ops.deform_conv2d(
        x, offset, block.weight, block.bias, block.stride, block.padding, block.dilation, mask
    )
    torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)


def test_load_from_conv_preserves_function_and_reports_exactness():
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1)
    x = torch.randn(2, 6, 9, 8)
    for cls, opts, exact in [
        (DeformConv2d, {}, True),
        (ModulatedDeformConv2d, {"mask_act": "2sigmoid"}, True),
        (ModulatedDeformConv2d, {}, False),
    ]:
        block = cls(6, 10, 3, stride=2, **opts)
        nn.init.normal_(block.conv_offset.weight)
        assert block.load_from_conv(conv) is exact
        if exact:
            torch.testing.assert_close(block(x), conv(x), rtol=1e-5, atol=1e-5)


def test_offset_lr_mult_becomes_param_group():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), DeformConv2d(8, 8, 3, offset_lr_mult=0.1))
    groups = param_groups(model, lr=1e-3, weight_decay=1e-4)
    by_mult = {g["lr_mult"]: g for g in groups}
    assert set(by_mult) == {1.0, 0.1}
    assert by_mult[0.1]["lr"] == pytest.approx(1e-4)
    offset_params = {id(model[1].conv_offset.weight), id(model[1].conv_offset.bias)}
    assert {id(p) for p in by_mult[0.1]["params"]} == offset_params
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_functional_rejects_mismatched_offsets():
    x, offset, weight, bias, stride, pad, dil, mask = random_case()
    with pytest.raises(ValueError, match="offset has shape"):
        deform_conv2d(x, offset[..., :-1], weight, bias, stride, pad, dil, mask)
    with pytest.raises(ValueError, match="deform_groups=3 must divide in_channels=8"):
        DeformConv2d(8, 8, 3, deform_groups=3)


@pytest.mark.parametrize("impl", IMPLS)
def test_bf16_autocast_matches_float32(impl):
    torch.manual_seed(0)
    block = ModulatedDeformConv2d(16, 16, 3)
    nn.init.normal_(block.conv_offset.weight, std=0.05)
    x = torch.randn(2, 16, 12, 10)
    with use_backend(deform_conv2d=impl):
        ref = block(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = block(x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


def saved_bytes(fn) -> int:
    """Bytes of distinct tensors autograd keeps for backward while running ``fn``."""
    seen = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def test_native_keeps_no_columns_for_backward():
    x, offset, weight, bias, stride, pad, dil, mask = random_case(c=32, cout=32, hw=(24, 20), groups=1)
    for t in (x, offset, weight, mask):  # as inside a block: everything is trained
        t.requires_grad_()
    ref = saved_bytes(lambda: deform(x, offset, weight, bias, stride, pad, dil, mask, impl="reference"))
    ours = saved_bytes(lambda: deform(x, offset, weight, bias, stride, pad, dil, mask, impl="native"))
    columns = x.shape[0] * 32 * 9 * offset.shape[-2] * offset.shape[-1] * 4
    assert ref >= columns  # the autograd formulation keeps the columns (and more)
    assert ours < columns / 2  # native keeps input, grid and mask only


def test_chunks_are_a_multiple_of_the_thread_count():
    threads = torch.get_num_threads()
    per = deform_native.CHUNK_BYTES // (3 * threads) + 1  # fits 3·threads - 1 samples: round down
    assert deform_native.chunk_size(1000, per) % threads == 0
    assert deform_native.chunk_size(1000, deform_native.CHUNK_BYTES * 10) == threads  # huge samples: one per thread
    assert deform_native.chunk_size(1, 1) == 1


@pytest.mark.parametrize("impl,module", [("native", deform_native), ("fused", deform_fused)])
def test_several_chunks_with_a_broadcast_gradient_equal_torchvision(monkeypatch, impl, module):
    """Chunks of 2 samples (5 = 2 + 2 + 1), groups and offset groups, the expanded gradient of ``.sum()``."""
    monkeypatch.setattr(module, "chunk_size", lambda n, per_sample_bytes: 2)
    x, offset, weight, bias, stride, pad, dil, mask = random_case(torch.float64, n=5)
    leaves = [t.requires_grad_() for t in (x, offset, weight, bias, mask)]
    ours = deform(x, offset, weight, bias, stride, pad, dil, mask, impl=impl)
    ref = torchvision.ops.deform_conv2d(x, offset, weight, bias, stride, pad, dil, mask)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    g_ours = torch.autograd.grad(ours.sum(), leaves)  # grad_out is a stride-0 broadcast of one scalar
    g_ref = torch.autograd.grad(ref.sum(), leaves)
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_batch_gives_an_empty_output_and_zero_gradients(impl):
    x, offset, weight, bias, stride, pad, dil, mask = random_case(n=0)
    leaves = [t.requires_grad_() for t in (x, offset, weight, bias, mask)]
    out = deform(x, offset, weight, bias, stride, pad, dil, mask, impl=impl)
    assert out.shape == (0, weight.shape[0], *offset.shape[-2:])
    grads = torch.autograd.grad(out.sum(), leaves)
    assert [g.shape for g in grads] == [t.shape for t in leaves]
    assert not grads[2].any() and not grads[3].any()
