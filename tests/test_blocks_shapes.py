"""Every conv block is a drop-in for nn.Conv2d: same output shape for the same arguments."""

import itertools

import pytest
import torch
import torch.nn as nn

from convblocks import build_block, list_blocks, same_padding

CONV_BLOCKS = sorted(list_blocks(kind="conv"))
# kernel, stride, dilation, groups, input (N, H, W): odd/even/non-square sizes, batch 1 and > 1.
GRID = [
    (3, 1, 1, 1, (1, 9, 7)),
    (3, 2, 1, 1, (2, 10, 7)),
    (1, 1, 1, 1, (2, 6, 5)),
    (1, 2, 1, 1, (1, 7, 8)),
    (5, 1, 2, 1, (2, 13, 11)),
    (3, 2, 2, 4, (1, 12, 9)),
    (3, 1, 1, 2, (3, 8, 8)),
    ((3, 5), (2, 1), (1, 2), 1, (2, 11, 10)),
    (2, 1, 1, 1, (2, 8, 7)),
]


def block_options(name):
    return {"levels": 2} if name == "pyconv" else {}


@pytest.mark.parametrize("name", CONV_BLOCKS)
@pytest.mark.parametrize("kernel,stride,dilation,groups,nhw", GRID)
def test_output_shape_matches_conv2d(name, kernel, stride, dilation, groups, nhw):
    n, h, w = nhw
    cin, cout = 16, 32
    if name == "pyconv":
        groups = 1  # pyconv's level groups take the place of conv groups
    block = build_block(
        name,
        in_channels=cin,
        out_channels=cout,
        kernel_size=kernel,
        stride=stride,
        dilation=dilation,
        groups=groups,
        **block_options(name),
    )
    ref = nn.Conv2d(cin, cout, kernel, stride, same_padding(kernel, dilation), dilation, groups)
    x = torch.randn(n, cin, h, w)
    assert block(x).shape == ref(x).shape


@pytest.mark.parametrize("name", CONV_BLOCKS)
def test_explicit_padding_and_no_bias(name):
    block = build_block(
        name,
        in_channels=8,
        out_channels=8,
        kernel_size=3,
        stride=2,
        padding=0,
        bias=False,
        **block_options(name),
    )
    x = torch.randn(2, 8, 11, 6)
    assert block(x).shape == nn.Conv2d(8, 8, 3, 2, 0)(x).shape == (2, 8, 5, 2)
    main_biases = [
        n for n, _ in block.named_parameters() if n.split(".")[-1] == "bias" and not n.startswith(("conv_offset", "fc"))
    ]
    assert main_biases == []


@pytest.mark.parametrize("name", sorted(list_blocks(kind="head")))
@pytest.mark.parametrize("hw", [(16, 12), (5, 7), (9, 9)])
def test_heads_keep_spatial_size(name, hw):
    head = build_block(name, in_channels=128, out_channels=48).eval()
    x = torch.randn(2, 128, *hw)
    assert head(x).shape == (2, 48, *hw)


def test_global_head_pools_to_nine_by_nine():
    head = build_block("pyconv_global_head", in_channels=64, out_channels=32).eval()
    seen = {}
    head.body.register_forward_pre_hook(lambda m, a: seen.update(shape=a[0].shape))
    head(torch.randn(1, 64, 32, 24))
    assert seen["shape"] == (1, 64, 9, 9)


def test_blocks_reject_bad_geometry():
    for name, kernel in itertools.product(CONV_BLOCKS, [0]):
        with pytest.raises(ValueError):
            build_block(name, in_channels=8, out_channels=8, kernel_size=kernel)
