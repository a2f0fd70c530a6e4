"""Deformable convolution as a function, in torchvision's offset/mask layout.

``deform_conv2d`` has the signature of ``torchvision.ops.deform_conv2d`` and four implementations, chosen by
``backend("deform_conv2d")``:

- ``"fused"``: a compiled channels-last CPU kernel (``deform_fused``) that samples and differentiates all taps
  in one pass each, then one GEMM per chunk; borders and gradients exactly as torchvision's. The default
  on CPU; built on first use, ``native`` where it cannot be built.
- ``"reference"``: bilinear sampling (``F.grid_sample``) of every kernel tap into a column tensor, then one
  batched matmul with the weights, differentiated by autograd. Pure PyTorch.
- ``"native"``: the same arithmetic in batch chunks with a hand-written backward that keeps no columns
  (``deform_native``): less memory, far fewer large allocations, equal results.
- ``"torchvision"``: torchvision's compiled kernel, run in float32 under autocast.

Bilinear sampling has a kink at integer positions, where every tap sits at zero offsets. ``fused`` and
torchvision take the same one-sided offset gradient there; ``native`` and ``reference`` go through
``grid_sample``'s normalised coordinates, whose rounding may pick the other side. Elsewhere all four agree.
All work on any device, in float64 and under autocast (positions always in float32 or better).

Offsets are ``(N, 2 * G * kh * kw, H_out, W_out)`` with ``(dy, dx)`` pairs per offset group ``G`` and kernel
tap (row-major); the mask is ``(N, G * kh * kw, H_out, W_out)``. This is torchvision's and mmcv's layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision

from ..conv import IntOrPair, output_size, to_pair
from . import cpu_ext, deform_fused
from .backends import backend
from .deform_native import DeformSampleMatmul


def _check_shapes(input, offset, weight, mask, out_hw) -> tuple[int, int]:
    n, c, _, _ = input.shape
    cout, cin_g, kh, kw = weight.shape
    if c % cin_g:
        raise ValueError(f"deform_conv2d: input has {c} channels, not a multiple of weight's {cin_g} per group")
    k = kh * kw
    if offset.shape[1] % (2 * k) or offset.shape[1] == 0:
        raise ValueError(
            f"deform_conv2d: offset has {offset.shape[1]} channels; expected 2 * offset_groups * {kh} * {kw}"
        )
    offset_groups = offset.shape[1] // (2 * k)
    if c % offset_groups:
        raise ValueError(f"deform_conv2d: {offset_groups} offset groups do not divide {c} input channels")
    if tuple(offset.shape[-2:]) != out_hw or offset.shape[0] != n:
        raise ValueError(
            f"deform_conv2d: offset has shape {tuple(offset.shape)}, expected ({n}, {offset.shape[1]}, "
            f"{out_hw[0]}, {out_hw[1]}) for this input, kernel, stride, padding and dilation"
        )
    if mask is not None and (mask.shape[1] != offset_groups * k or tuple(mask.shape[-2:]) != out_hw):
        raise ValueError(
            f"deform_conv2d: mask has shape {tuple(mask.shape)}, expected ({n}, {offset_groups * k}, "
            f"{out_hw[0]}, {out_hw[1]})"
        )
    return offset_groups, c // cin_g


def sampling_grid(
    input: torch.Tensor,
    offset: torch.Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input as ``(N·G, C/G, H, W)`` and the ``grid_sample`` grid ``(N·G, K·H_out, W_out, 2)`` of every tap.

    Positions are computed in float32 (or float64) whatever the input dtype, so that low-precision
    offsets never move a sampling point by a rounding error of the absolute coordinate.
    """
    n, c, h, w = input.shape
    kh, kw = kernel_size
    ho, wo = offset.shape[-2:]
    k = kh * kw
    groups = offset.shape[1] // (2 * k)
    pos_dtype = torch.float64 if input.dtype == torch.float64 else torch.float32
    dev = input.device
    # Regular sampling grid in input pixels: (K, H_out, W_out) for y and x.
    ys = (torch.arange(ho, device=dev, dtype=pos_dtype) * stride[0] - padding[0])[None, :, None] + (
        torch.arange(kh, device=dev, dtype=pos_dtype) * dilation[0]
    ).repeat_interleave(kw)[:, None, None]
    xs = (torch.arange(wo, device=dev, dtype=pos_dtype) * stride[1] - padding[1])[None, None, :] + (
        torch.arange(kw, device=dev, dtype=pos_dtype) * dilation[1]
    ).repeat(kh)[:, None, None]
    off = offset.to(pos_dtype).view(n, groups, k, 2, ho, wo)
    # grid_sample with align_corners=False maps pixel p to (2p + 1) / size - 1; this is valid for size 1 too.
    gy = (off[:, :, :, 0] + ys) * (2.0 / h) + (1.0 / h - 1.0)
    gx = (off[:, :, :, 1] + xs) * (2.0 / w) + (1.0 / w - 1.0)
    grid = torch.stack((gx, gy), dim=-1).view(n * groups, k * ho, wo, 2)
    return input.to(pos_dtype).reshape(n * groups, c // groups, h, w), grid


def deform_columns(
    input: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor | None,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """Sampled (and masked) columns ``(N, C·kh·kw, H_out·W_out)``, channel-major like ``F.unfold``."""
    n, c = input.shape[:2]
    sample_in, grid = sampling_grid(input, offset, kernel_size, stride, padding, dilation)
    cols = F.grid_sample(sample_in, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if mask is not None:  # (N*G, C/G, K*H_out, W_out) * (N*G, 1, K*H_out, W_out)
        cols = cols * mask.to(cols.dtype).reshape(cols.shape[0], 1, *cols.shape[2:])
    return cols.view(n, c * kernel_size[0] * kernel_size[1], offset.shape[-2] * offset.shape[-1])


def _compute_dtype(input: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    dev = input.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else weight.dtype


def _reference(input, offset, weight, bias, stride, padding, dilation, mask, out_hw, groups):
    """Autograd formulation: all columns at once, then one batched matmul."""
    n = input.shape[0]
    cout, cin_g, kh, kw = weight.shape
    cdtype = _compute_dtype(input, weight)
    cols = deform_columns(input, offset, mask, (kh, kw), stride, padding, dilation).to(cdtype)
    w = weight.to(cdtype).reshape(groups, cout // groups, cin_g * kh * kw)
    out = torch.matmul(w, cols.view(n, groups, cin_g * kh * kw, cols.shape[-1]))  # (N, g, C_out/g, L)
    return _finish(out.reshape(n, cout, *out_hw), bias)


def _native(input, offset, weight, bias, stride, padding, dilation, mask, out_hw, groups):
    """Chunked sampling + matmul with a hand-written backward (``deform_native``)."""
    n = input.shape[0]
    cout, cin_g, kh, kw = weight.shape
    sample_in, grid = sampling_grid(input, offset, (kh, kw), stride, padding, dilation)
    if mask is not None:
        mask = mask.to(sample_in.dtype).reshape(grid.shape[0], 1, *grid.shape[1:3])
    w = weight.reshape(groups, cout // groups, cin_g * kh * kw)
    out = DeformSampleMatmul.apply(sample_in, grid, mask, w, n, _compute_dtype(input, weight))
    return _finish(out.reshape(n, cout, *out_hw), bias)


def _fused_usable(input: torch.Tensor) -> bool:
    """The fused kernel runs on CPU tensors, where it was built. ``torch.compile`` keeps it as one custom op;
    ``jit.trace`` and ``torch.export`` make graphs meant to run elsewhere, so they record ``native``'s ops
    (``cpu_ext.usable``); ``CONVZOO_DEFORM_KERNEL=0`` switches it off alone (``deform_fused.available``)."""
    return cpu_ext.usable(input) and deform_fused.available()


def _fused(input, offset, weight, bias, stride, padding, dilation, mask, out_hw, groups):
    """The compiled channels-last CPU kernel (``deform_fused``); ``native`` where it cannot run."""
    if not _fused_usable(input):
        return _native(input, offset, weight, bias, stride, padding, dilation, mask, out_hw, groups)
    geometry = (stride, padding, dilation)  # groups: C / weight.shape[1]
    out = deform_fused.deform_conv2d_fused(input, offset, mask, weight, geometry, _compute_dtype(input, weight))
    return _finish(out.reshape(input.shape[0], weight.shape[0], *out_hw), bias)


def _finish(out: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return out if bias is None else out + bias.to(out.dtype).view(1, -1, 1, 1)


def _torchvision(input, offset, weight, bias, stride, padding, dilation, mask):
    dev = input.device.type
    if torch.is_autocast_enabled(dev) or len({t.dtype for t in (input, offset, weight) if t is not None}) > 1:
        # torchvision's kernel needs one dtype; run it in float32 and hand back the input's dtype.
        with torch.autocast(dev, enabled=False):
            f = lambda t: None if t is None else t.float()  # noqa: E731
            out = torchvision.ops.deform_conv2d(
                f(input), f(offset), f(weight), f(bias), stride, padding, dilation, f(mask)
            )
        return out.to(input.dtype)
    return torchvision.ops.deform_conv2d(input, offset, weight, bias, stride, padding, dilation, mask)


def _auto_impl(input: torch.Tensor) -> str:
    """torchvision's kernel off the CPU; on CPU the fused kernel where it can run, else ``native``."""
    if input.device.type != "cpu":
        return "torchvision"
    return "fused" if _fused_usable(input) else "native"


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Deformable convolution (v1; v2 when ``mask`` is given) with externally supplied offsets.

    ``input (N, C, H, W)``, ``offset (N, 2·G·kh·kw, H_out, W_out)``, ``weight (C_out, C/groups, kh, kw)``,
    ``mask (N, G·kh·kw, H_out, W_out)`` → ``(N, C_out, H_out, W_out)``. Groups and offset groups are
    inferred from the shapes, as in torchvision. Backend ``auto``: ``fused`` on CPU, ``native`` while tracing or
    exporting, torchvision's kernel elsewhere.
    """
    impl = backend("deform_conv2d")
    stride, padding, dilation = to_pair(stride), to_pair(padding), to_pair(dilation)
    kh, kw = weight.shape[-2:]
    out_hw = output_size(tuple(input.shape[-2:]), (kh, kw), stride, padding, dilation)
    _, groups = _check_shapes(input, offset, weight, mask, out_hw)
    if input.shape[0] == 0:  # nothing to sample: autograd gives the empty output and zero weight gradients
        return _reference(input, offset, weight, bias, stride, padding, dilation, mask, out_hw, groups)
    if impl == "auto":
        impl = _auto_impl(input)
    if impl == "fused":
        return _fused(input, offset, weight, bias, stride, padding, dilation, mask, out_hw, groups)
    if impl == "reference":
        return _reference(input, offset, weight, bias, stride, padding, dilation, mask, out_hw, groups)
    if impl == "native":
        return _native(input, offset, weight, bias, stride, padding, dilation, mask, out_hw, groups)
    return _torchvision(input, offset, weight, bias, stride, padding, dilation, mask)
