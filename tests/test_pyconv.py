"""PyConv: level arithmetic, parameter counts by hand, clear errors for impossible groups."""

import pytest
import torch

from convblocks import BlockConfigError, PyConv2d, build_block
from convblocks.kernels import use_backend

pytestmark = pytest.mark.kernels  # the blocks on top of the compiled kernels, where built


@pytest.mark.parametrize(
    "levels,expected",
    [  # (out channels, kernel, groups) per level, as in PyConvResNet's stages 1..4 (paper Table 2)
        (4, [(16, 3, 1), (16, 5, 4), (16, 7, 8), (16, 9, 16)]),
        (3, [(16, 3, 1), (16, 5, 4), (32, 7, 8)]),
        (2, [(32, 3, 1), (32, 5, 4)]),
        (1, [(64, 3, 1)]),
    ],
)
def test_paper_levels_and_hand_counted_parameters(levels, expected):
    block = PyConv2d(64, 64, 3, levels=levels, bias=False)
    got = [(c.out_channels, c.kernel_size[0], c.groups) for c in block.levels]
    assert got == expected
    hand = sum(out * (64 // g) * k * k for out, k, g in expected)
    assert sum(p.numel() for p in block.parameters()) == hand
    assert [c.padding[0] for c in block.levels] == [k // 2 for _, k, _ in expected]


def test_pyconv4_64_channels_parameter_count():
    # 16·64·9 + 16·16·25 + 16·8·49 + 16·4·81 = 9216 + 6400 + 6272 + 5184
    assert sum(p.numel() for p in PyConv2d(64, 64, 3, bias=False).parameters()) == 27072
    assert sum(p.numel() for p in PyConv2d(64, 64, 3, bias=True).parameters()) == 27072 + 64


def test_output_is_concatenation_of_levels():
    block = PyConv2d(32, 32, 3, stride=2, levels=3)
    x = torch.randn(2, 32, 9, 8)
    torch.testing.assert_close(block(x), torch.cat([level(x) for level in block.levels], 1))


def test_custom_kernels_groups_splits():
    block = PyConv2d(24, 30, 3, kernels=[3, 7], level_groups=[1, 3], splits=[12, 18])
    assert [(c.out_channels, c.kernel_size, c.groups) for c in block.levels] == [
        (12, (3, 3), 1),
        (18, (7, 7), 3),
    ]
    assert block(torch.randn(1, 24, 6, 6)).shape == (1, 30, 6, 6)


def test_impossible_groups_get_clear_error():
    with pytest.raises(
        BlockConfigError,
        match=r"block 'pyconv': pyconv level 4 \(kernel 9x9, groups 16\) "
        r"needs in_channels=40",
    ):
        build_block("pyconv", in_channels=40, out_channels=64)
    with pytest.raises(BlockConfigError, match="splits .* sum to out_channels=64"):
        build_block("pyconv", in_channels=64, out_channels=64, splits=[32, 16])
    with pytest.raises(BlockConfigError, match="needs as many kernels"):
        build_block("pyconv", in_channels=64, out_channels=64, levels=2, kernels=[3, 5, 7])


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_channels_last_fast_path_equals_plain_layout(fmt):
    block = PyConv2d(64, 64, 3, stride=2)
    x = torch.randn(2, 64, 13, 10).contiguous(memory_format=fmt).requires_grad_()
    with use_backend(pyconv2d="auto"):
        out_fast = block(x)
    with use_backend(pyconv2d="reference"):
        out_plain = block(x)
    torch.testing.assert_close(out_fast, out_plain, rtol=1e-5, atol=1e-5)
    assert out_fast.is_contiguous(memory_format=fmt)  # handed back in the input's layout
    go = torch.randn_like(out_plain)
    g_fast = torch.autograd.grad(out_fast, [x, *block.parameters()], go)
    g_plain = torch.autograd.grad(out_plain, [x, *block.parameters()], go)
    for a, b in zip(g_fast, g_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
