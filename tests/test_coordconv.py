"""CoordConv: coordinate channels value by value, and equality with the concatenation formulation."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from convblocks import CoordConv2d, coordinate_channels


def test_coordinate_channels_value_by_value_non_square():
    h, w = 3, 5
    c = coordinate_channels(h, w, with_r=True)
    assert c.shape == (1, 3, h, w)
    for y in range(h):
        for x in range(w):
            i, j = -1 + 2 * y / (h - 1), -1 + 2 * x / (w - 1)
            assert c[0, 0, y, x].item() == pytest.approx(i)
            assert c[0, 1, y, x].item() == pytest.approx(j)
            assert c[0, 2, y, x].item() == pytest.approx((i * i + j * j) ** 0.5)
    assert c[0, 0, :, 0].tolist() == pytest.approx([-1.0, 0.0, 1.0])
    assert c[0, 1, 0].tolist() == pytest.approx([-1.0, -0.5, 0.0, 0.5, 1.0])
    assert torch.all(coordinate_channels(1, 4)[0, 0] == 0)  # a single row sits at the centre


def concat_reference(block: CoordConv2d, x: torch.Tensor) -> torch.Tensor:
    """The textbook form: concatenate coordinate channels to the input, one conv."""
    coords = coordinate_channels(*x.shape[-2:], block.with_r).expand(x.shape[0], -1, -1, -1)
    weight = torch.cat([block.weight, block.coord_weight], dim=1)
    return F.conv2d(torch.cat([x, coords], 1), weight, block.bias, block.stride, block.padding, block.dilation)


@pytest.mark.parametrize("with_r", [False, True])
@pytest.mark.parametrize("shape", [(1, 4, 7, 12), (3, 4, 10, 6)])
def test_equals_concatenation_train_and_eval(with_r, shape):
    block = CoordConv2d(4, 6, 3, stride=2, with_r=with_r)
    x = torch.randn(*shape)
    ref = concat_reference(block, x)
    torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)
    block.eval()
    with torch.no_grad():
        torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)  # served from the cache


def test_gradients_equal_concatenation():
    block = CoordConv2d(4, 6, 3, with_r=True)
    x = torch.randn(2, 4, 8, 5, requires_grad=True)
    params = [x, block.weight, block.coord_weight, block.bias]
    go = torch.randn(2, 6, 8, 5)
    for a, b in zip(
        torch.autograd.grad(block(x), params, go),
        torch.autograd.grad(concat_reference(block, x), params, go),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_eval_cache_follows_weight_updates():
    block = CoordConv2d(4, 6, 3).eval()
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        block(x)
        block.coord_weight.add_(1.0)  # as an optimiser step would
        torch.testing.assert_close(block(x), concat_reference(block, x), rtol=1e-5, atol=1e-5)
        block.load_state_dict(CoordConv2d(4, 6, 3).state_dict())
        torch.testing.assert_close(block(x), concat_reference(block, x), rtol=1e-5, atol=1e-5)


def test_coordinates_are_cached_not_rebuilt():
    block = CoordConv2d(4, 6, 3)
    x = torch.randn(2, 4, 8, 8)
    block(x)
    first = block.coords(8, 8, x.device, x.dtype)
    block(x)
    assert block.coords(8, 8, x.device, x.dtype) is first


def test_load_from_conv_preserves_function():
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    block = CoordConv2d(4, 6, 3, stride=2, groups=2)
    assert block.load_from_conv(conv)
    x = torch.randn(2, 4, 9, 7)
    torch.testing.assert_close(block(x), conv(x), rtol=1e-6, atol=1e-6)
