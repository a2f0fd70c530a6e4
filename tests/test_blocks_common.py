"""What every registered block must survive: autocast, tracing, channels-last, state_dict round trips."""

import pytest
import torch

from convblocks import build_block, list_blocks

pytestmark = pytest.mark.kernels  # the blocks on top of the compiled kernels, where built

ALL = sorted(list_blocks())


def make(name, seed=0):
    torch.manual_seed(seed)
    return build_block(name, in_channels=64, out_channels=64)


@pytest.mark.parametrize("name", ALL)
def test_bf16_autocast_cpu_close_to_float32(name):
    block = make(name).eval()
    x = torch.randn(2, 64, 12, 10)
    with torch.no_grad():
        ref = block(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = block(x)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3


@pytest.mark.parametrize("name", ALL)
def test_bf16_autocast_backward(name):
    block = make(name).train()
    x = torch.randn(2, 64, 10, 10, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = block(x).float().square().mean()
    loss.backward()
    assert torch.isfinite(x.grad).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in block.parameters())


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", ALL)
def test_jit_trace_matches_eager(name):
    block = make(name).eval()
    x = torch.randn(2, 64, 12, 10)
    with torch.no_grad():
        traced = torch.jit.trace(block, x, check_trace=False)
        torch.testing.assert_close(traced(x), block(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_channels_last_module_and_input_give_the_same_outputs_and_gradients(name):
    """``Module.to(memory_format=channels_last)`` (what ``train.channels_last`` does) must work for every block."""
    ref, fast = make(name).train(), make(name).train().to(memory_format=torch.channels_last)
    x = torch.randn(2, 64, 12, 10)
    x_ref, x_cl = x.clone().requires_grad_(), x.contiguous(memory_format=torch.channels_last).requires_grad_()
    out_ref, out_cl = ref(x_ref), fast(x_cl)
    torch.testing.assert_close(out_cl, out_ref, rtol=1e-4, atol=1e-5)
    out_ref.square().sum().backward()
    out_cl.square().sum().backward()
    pairs = [("input", x_cl.grad, x_ref.grad)]
    pairs += [(n, p_cl.grad, p.grad) for (n, p), p_cl in zip(ref.named_parameters(), fast.parameters(), strict=True)]
    for pname, got, want in pairs:  # float32 sums in another order: tolerance relative to the gradient's scale
        err, scale = (got - want).abs().max().item(), want.abs().max().item()
        assert err <= 1e-5 * scale + 1e-6, f"{pname}: max error {err:.3g} at scale {scale:.3g}"


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip(name):
    a, b = make(name, seed=0).eval(), make(name, seed=1).eval()
    x = torch.randn(2, 64, 9, 11)
    assert not torch.allclose(a(x), b(x))
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_empty_batch_gives_empty_output_and_zero_gradients_of_the_right_shapes(name):
    """Detection heads see batches with no boxes: a batch of 0 goes forward and backward like any other."""
    block = make(name).train()
    with torch.no_grad():
        expected = block.eval()(torch.randn(2, 64, 12, 10)).shape[1:]
    block.train()
    x = torch.randn(0, 64, 12, 10, requires_grad=True)
    out = block(x)
    assert out.shape == (0, *expected)
    out.square().sum().backward()
    assert x.grad.shape == x.shape
    for pname, p in block.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and not p.grad.any(), pname


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("view", ["strided", "transposed"])
def test_non_contiguous_input_gives_the_contiguous_outputs_and_gradients(name, view):
    """A slice with a step, or a batch-major tensor transposed: neither NCHW- nor channels-last-contiguous."""
    block = make(name).train()
    base = torch.randn(2, 64, 12, 20)[..., ::2] if view == "strided" else torch.randn(64, 2, 12, 10).transpose(0, 1)
    x_nc = base.detach().requires_grad_()
    x = base.contiguous().requires_grad_()
    assert not x_nc.is_contiguous() and not x_nc.is_contiguous(memory_format=torch.channels_last)
    out_nc = block(x_nc)
    out = block(x)
    torch.testing.assert_close(out_nc, out, rtol=1e-5, atol=1e-5)
    go = torch.randn_like(out)
    leaves = [*block.parameters()]
    grads_nc = torch.autograd.grad(out_nc, [x_nc, *leaves], go)
    grads = torch.autograd.grad(out, [x, *leaves], go)
    for a, b in zip(grads_nc, grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_torch_compile_matches_eager(name):
    block = make(name).train()
    compiled = torch.compile(block)
    x = torch.randn(2, 64, 12, 10, requires_grad=True)
    out, ref = compiled(x), block(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    g1 = torch.autograd.grad(out.square().sum(), x)[0]
    g2 = torch.autograd.grad(ref.square().sum(), x)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_torch_compile_with_dynamic_shapes_matches_eager(name):
    """Multi-scale training: one compiled graph for several batch sizes and resolutions (symbolic shapes)."""
    block = make(name).train()
    compiled = torch.compile(block, dynamic=True)
    for shape in [(2, 64, 12, 10), (3, 64, 10, 14)]:
        x = torch.randn(*shape, requires_grad=True)
        out, ref = compiled(x), block(x)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        g1 = torch.autograd.grad(out.square().sum(), x)[0]
        g2 = torch.autograd.grad(ref.square().sum(), x)[0]
        torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-4)
