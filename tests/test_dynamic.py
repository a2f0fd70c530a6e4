"""Dynamic convolution against a naive per-sample loop; batch independence; export formulation."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from convblocks import DynamicConv2d, set_temperature, temperature_schedule
from convblocks.kernels import dynamic_conv, set_backend, use_backend
from convblocks.kernels.dynamic_conv import auto_backend, flat_bank

pytestmark = pytest.mark.kernels  # the blocks on top of the compiled kernels, where built


@pytest.fixture(autouse=True)
def restore_backend():
    """Each test may choose the dynamic conv backend (``make``); the next starts from the process's."""
    with use_backend():
        yield


def naive(block: DynamicConv2d, x: torch.Tensor) -> torch.Tensor:
    """One sample at a time: attention, aggregate the K kernels, F.conv2d."""
    outs = []
    for xi in x:
        xi = xi[None]
        pooled = xi.mean(dim=(2, 3))
        z = block.fc2(F.relu(block.fc1(pooled)))
        pi = torch.softmax(z / block.temperature, dim=1)[0]
        w = sum(pi[k] * block.kernels[k] for k in range(block.num_kernels))
        b = None if block.bias is None else sum(pi[k] * block.bias[k] for k in range(block.num_kernels))
        outs.append(F.conv2d(xi, w, b, block.stride, block.padding, block.dilation, block.groups))
    return torch.cat(outs)


def make(impl="auto", groups=2, **kw):
    """A block with peaked attention, and the process's dynamic conv backend set to ``impl``."""
    set_backend("dynamic_conv2d", impl)
    torch.manual_seed(0)
    block = DynamicConv2d(8, 12, 3, stride=2, dilation=1, groups=groups, temperature=2.0, **kw)
    nn.init.normal_(block.fc2.weight, std=2.0)  # peaked attention: kernels really differ per sample
    return block


@pytest.mark.parametrize("impl", ["grouped", "unfold", "mixture"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_equals_naive_per_sample_loop(impl, mode):
    block = make(impl)
    block.train(mode == "train")
    x = torch.randn(5, 8, 9, 11)
    torch.testing.assert_close(block(x), naive(block, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["grouped", "unfold", "mixture"])
def test_gradients_equal_naive(impl):
    block = make(impl, groups=1)
    x = torch.randn(3, 8, 7, 6, requires_grad=True)
    go = torch.randn(3, 12, 4, 3)
    params = [x, block.weight, block.bias, block.fc1.weight, block.fc2.weight]
    g_fast = torch.autograd.grad(block(x), params, go)
    g_ref = torch.autograd.grad(naive(block, x), params, go)
    for a, b in zip(g_fast, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", ["auto", "grouped", "unfold", "mixture"])
def test_empty_batch_gives_an_empty_output_and_zero_gradients(impl):
    block = make(impl)
    x = torch.randn(0, 8, 9, 11, requires_grad=True)
    out = block(x)
    assert out.shape == (0, 12, 5, 6)
    out.sum().backward()
    assert x.grad.shape == x.shape
    assert block.weight.grad.shape == block.weight.shape and not block.weight.grad.any()


def test_shuffling_batch_shuffles_outputs_identically():
    block = make("grouped").train()
    x = torch.randn(6, 8, 10, 10)
    perm = torch.randperm(6)
    torch.testing.assert_close(block(x)[perm], block(x[perm]), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(block(x[:1]), block(x)[:1], rtol=1e-5, atol=1e-5)  # batch 1 = its row


def test_attention_is_softmax_over_k_and_temperature_flattens_it():
    block = make()
    x = torch.randn(4, 8, 6, 6)
    pi = block.attention(x)
    assert pi.shape == (4, block.num_kernels)
    torch.testing.assert_close(pi.sum(1), torch.ones(4))
    block.set_temperature(1e6)
    torch.testing.assert_close(block.attention(x), torch.full((4, 4), 0.25), rtol=1e-4, atol=1e-4)


def test_temperature_schedule_and_model_setter():
    assert temperature_schedule(0) == 30.0 and temperature_schedule(5) == pytest.approx(15.5)
    assert temperature_schedule(10) == 1.0 and temperature_schedule(50) == 1.0
    model = nn.Sequential(make(), nn.ReLU(), DynamicConv2d(12, 4, 1))
    assert set_temperature(model, 7.0) == 2
    assert model[0].temperature.item() == 7.0 and model[2].temperature.item() == 7.0
    assert "temperature" in model[2].state_dict()  # a saved model evaluates with its own τ


def test_load_from_conv_is_exact_whatever_the_attention():
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=2)
    block = make()
    assert block.load_from_conv(conv)
    x = torch.randn(3, 8, 9, 9)
    torch.testing.assert_close(block(x), conv(x), rtol=1e-5, atol=1e-5)


def test_mixture_traces_without_baking_batch_size():
    block = make("mixture").eval()
    traced = torch.jit.trace(block, torch.randn(2, 8, 9, 9), check_trace=False)
    x = torch.randn(5, 8, 9, 9)
    torch.testing.assert_close(traced(x), block(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(traced(x), make("grouped").eval()(x), rtol=1e-5, atol=1e-5)


def test_auto_exports_with_dynamic_batch():
    block = make("auto").eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    ep = torch.export.export(block, (torch.randn(2, 8, 9, 9),), dynamic_shapes=({0: batch},))
    x = torch.randn(7, 8, 9, 9)
    torch.testing.assert_close(ep.module()(x), block(x), rtol=1e-5, atol=1e-5)


def test_auto_under_compile_uses_per_sample_kernels_and_matches_naive(monkeypatch):
    """torch.compile specializes on the batch size, so ``auto`` need not pay the K× FLOPs of ``mixture``."""

    def no_mixture(*args):
        raise AssertionError("auto chose mixture under torch.compile")

    block = make("auto")
    monkeypatch.setattr(dynamic_conv, "_mixture", no_mixture)
    compiled = torch.compile(block, backend="eager", fullgraph=True)
    x = torch.randn(3, 8, 9, 9, requires_grad=True)
    out = compiled(x)
    ref = naive(block, x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    torch.testing.assert_close(
        torch.autograd.grad(out, x, g)[0], torch.autograd.grad(ref, x, g)[0], rtol=1e-5, atol=1e-5
    )


def test_auto_takes_unfold_on_cpu_where_each_output_sums_many_inputs():
    """(C_in/g)·kh·kw ≥ UNFOLD_MIN_INPUTS: im2col + batched matmul; fewer: the grouped conv."""
    x = torch.randn(1, 128, 4, 4)
    assert auto_backend(x, DynamicConv2d(128, 8, 3, padding=1).kernels) == "unfold"  # 1152
    assert auto_backend(x[:, :64], DynamicConv2d(64, 8, 3, padding=1).kernels) == "grouped"  # 576
    assert auto_backend(x, DynamicConv2d(128, 8, 3, padding=1, groups=2).kernels) == "grouped"  # 576
    assert auto_backend(x.to("meta"), DynamicConv2d(128, 8, 3, padding=1).kernels) == "grouped"  # not CPU


@pytest.mark.parametrize("impl", ["grouped", "unfold"])
@pytest.mark.parametrize("groups", [1, 2])
def test_channels_last_bank_uses_its_own_order_with_equal_results(impl, groups):
    """A channels-last weight is mixed in its memory order, (C_out, kh, kw, C_in/g), and the columns' rows follow."""
    set_backend("dynamic_conv2d", impl)
    torch.manual_seed(0)
    ref = DynamicConv2d(12, 8, 3, padding=1, groups=groups, temperature=1.0).double()
    fast = DynamicConv2d(12, 8, 3, padding=1, groups=groups, temperature=1.0).double()
    fast.load_state_dict(ref.state_dict())
    fast = fast.to(memory_format=torch.channels_last)
    assert flat_bank(fast.kernels)[1] and not flat_bank(ref.kernels)[1]
    x = torch.randn(3, 12, 6, 5, dtype=torch.float64)
    xr, xf = x.clone().requires_grad_(), x.contiguous(memory_format=torch.channels_last).requires_grad_()
    out_r, out_f = ref(xr), fast(xf)
    torch.testing.assert_close(out_f, out_r, rtol=1e-12, atol=1e-12)
    go = torch.randn_like(out_r)
    grads_r = torch.autograd.grad(out_r, [xr, ref.weight, ref.fc1.weight], go)
    grads_f = torch.autograd.grad(out_f, [xf, fast.weight, fast.fc1.weight], go)
    for a, b in zip(grads_f, grads_r, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_inductor_compiles_the_unfold_formulation_with_eager_results():
    """``auto`` at 128 channels takes im2col + matmul; inductor keeps the compiled im2col and mix as ops."""
    torch.manual_seed(0)
    block = DynamicConv2d(128, 16, 3, padding=1, temperature=1.0)
    x = torch.randn(3, 128, 6, 5, requires_grad=True)
    assert auto_backend(x, block.kernels) == "unfold"
    out, ref = torch.compile(block, fullgraph=True)(x), block(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(out, [x, block.weight], g), torch.autograd.grad(ref, [x, block.weight], g)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_unfold_formulation_trains_under_bf16_autocast():
    """Under CPU autocast the product runs in bfloat16; the gradients reach input and kernels, finite."""
    set_backend("dynamic_conv2d", "unfold")
    torch.manual_seed(0)
    block = DynamicConv2d(128, 16, 3, padding=1)
    x = torch.randn(2, 128, 6, 5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = block(x)
    torch.testing.assert_close(out.float(), block(x).detach(), rtol=0.05, atol=0.05)
    out.float().square().sum().backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all() and torch.isfinite(block.weight.grad).all()
