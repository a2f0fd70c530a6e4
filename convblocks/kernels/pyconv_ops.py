"""``pyconv2d``: parallel grouped convs of one input (PyConv's levels), outputs concatenated along channels.

On CPU (backend ``auto``) the levels run in channels-last layout, where oneDNN's grouped convolutions with large
kernels are several times faster, and ``grouped_conv2d`` phrases each grouped level the way it runs fastest
(``grouped_conv``): where the compiled kernels apply, a level with up to four outputs per group at stride 1 runs
one compiled forward, other levels with one or two outputs per group run as depthwise convs and group sums, and
in training at stride 1 the rest as transposed convs. The output is handed back in the input's memory format.
Backend ``direct``: channels-last, one ``F.conv2d`` per level; ``reference``: one ``F.conv2d`` per level as is.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..conv import IntOrPair, memory_format_of, to_pair
from .backends import backend
from .grouped_conv import conv2d_as_depthwise_sum, conv2d_as_transposed, kernels_usable, transposed_padding
from .grouped_kernels import forward_kernel_applies
from .layout import cat_to_memory_format, to_memory_format

DEPTHWISE_MAX_OUTPUTS = 2  # outputs per group up to which depthwise convs + sums beat oneDNN's grouped conv


def pyconv2d(
    input: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor | None],
    stride: IntOrPair,
    paddings: Sequence[IntOrPair],
    dilation: IntOrPair,
    groups: Sequence[int],
) -> torch.Tensor:
    """``cat([conv2d(input, weights[i], biases[i], stride, paddings[i], dilation, groups[i]) ...], dim=1)``.

    ``input (N, C_in, H, W)``, ``weights[i] (C_i, C_in/groups[i], kh_i, kw_i)`` with paddings that give every
    level the same output size → ``(N, Σ C_i, H_out, W_out)``. The backend is ``backend("pyconv2d")``.
    """
    impl = backend("pyconv2d")
    levels = list(zip(weights, biases, paddings, groups, strict=True))
    if impl == "reference" or (impl == "auto" and input.device.type != "cpu") or input.dim() != 4:
        return torch.cat([F.conv2d(input, w, b, stride, p, dilation, g) for w, b, p, g in levels], dim=1)
    xc = to_memory_format(input, torch.channels_last)
    if impl == "direct":
        outs = [F.conv2d(xc, w, b, stride, p, dilation, g) for w, b, p, g in levels]
    else:
        outs = [grouped_conv2d(xc, w, b, stride, p, dilation, g) for w, b, p, g in levels]
    return cat_to_memory_format(outs, memory_format_of(input))


def grouped_conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``F.conv2d`` on a channels-last input, in the formulation oneDNN runs fastest (equal results)."""
    stride, padding, dilation = to_pair(stride), to_pair(padding), to_pair(dilation)
    if groups == 1:
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    outputs_per_group = weight.shape[0] // groups
    compiled = kernels_usable(input, weight) and (
        outputs_per_group <= DEPTHWISE_MAX_OUTPUTS or forward_kernel_applies(weight.shape, stride, dilation, groups)
    )
    if outputs_per_group == 1 or compiled:
        return conv2d_as_depthwise_sum(input, weight, bias, stride, padding, dilation, groups)
    training = torch.is_grad_enabled() and weight.requires_grad
    kernel_size = tuple(weight.shape[-2:])
    if training and stride == (1, 1) and transposed_padding(kernel_size, padding, dilation) is not None:
        return conv2d_as_transposed(input, weight, bias, padding, dilation, groups)
    return F.conv2d(input, weight, bias, stride, padding, dilation, groups)
