"""The ``native`` backend of ``deform_conv2d``: deformable sampling + matmul in batch chunks, hand-written backward.

The autograd formulation (``grid_sample`` → mask multiply → matmul) allocates several column tensors of
``C·kh·kw`` times the input size per step and keeps two of them for backward; on CPU those allocations
and their page faults cost as much as the arithmetic. Here the columns exist one small batch chunk at a
time: forward samples, masks in place and multiplies; backward re-samples the chunk instead of keeping
it. Only the input, the sampling grid and the mask are saved. Results equal the autograd formulation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

CHUNK_BYTES = 24 * 2**20  # column bytes per chunk: small enough to be served from the heap, not fresh pages


def chunk_size(n: int, per_sample_bytes: int) -> int:
    """Samples per chunk: columns within CHUNK_BYTES, a multiple of the thread count (the samplers and the
    batched GEMM split a chunk's samples between threads, so an odd chunk leaves a core idle)."""
    threads = torch.get_num_threads()
    fits = max(1, CHUNK_BYTES // max(per_sample_bytes, 1))
    return max(1, min(n, max(threads, fits // threads * threads)))  # ≥ 1: a range step, even for n = 0


def _grid_sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class DeformSampleMatmul(torch.autograd.Function):
    """``out[n] = W @ (bilinear_sample(x[n], grid[n]) * mask[n])`` for chunks of samples.

    Shapes: ``x (N·G, C/G, H, W)``, ``grid (N·G, K·H_out, W_out, 2)``, ``mask (N·G, 1, K·H_out, W_out)`` or
    None, ``weight (g, C_out/g, C/g·K)``; returns ``(N, g, C_out/g, H_out·W_out)`` in ``compute_dtype``.
    """

    @staticmethod
    def forward(ctx, x, grid, mask, weight, n: int, compute_dtype: torch.dtype):
        with torch.autocast(x.device.type, enabled=False):
            ng = x.shape[0]
            per = ng // n  # offset groups
            g, _, ck = weight.shape
            w = weight.to(compute_dtype)
            step = chunk_size(n, x.shape[1] * per * grid.shape[1] * grid.shape[2] * x.element_size())
            outs = []  # (matmul into a preallocated output breaks torch.jit.trace of the block)
            for s in range(0, n, step):
                e = min(n, s + step)
                cols = _grid_sample(x[s * per : e * per], grid[s * per : e * per])
                if mask is not None:
                    cols.mul_(mask[s * per : e * per])
                outs.append(torch.matmul(w, cols.to(compute_dtype).view(e - s, g, ck, -1)))
            out = torch.cat(outs) if len(outs) > 1 else outs[0]
        ctx.save_for_backward(x, grid, mask, weight)
        ctx.n, ctx.compute_dtype, ctx.step = n, compute_dtype, step
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x, grid, mask, weight = ctx.saved_tensors
        n, step, cdtype = ctx.n, ctx.step, ctx.compute_dtype
        per = x.shape[0] // n
        g, _, ck = weight.shape
        need_x, need_grid, need_mask, need_w = ctx.needs_input_grad[:4]
        w_t = weight.to(cdtype).transpose(1, 2)  # (g, C/g·K, C_out/g)
        gx = torch.empty_like(x) if need_x else None
        ggrid = torch.empty_like(grid) if need_grid else None
        gmask = torch.empty_like(mask) if (need_mask and mask is not None) else None
        gw = torch.zeros(weight.shape, dtype=torch.float32 if cdtype != torch.float64 else cdtype, device=x.device)
        grad_out = grad_out.contiguous()  # a broadcast gradient (e.g. of .sum()) would be copied per matmul
        with torch.autocast(x.device.type, enabled=False):
            for s in range(0, n, step):
                e = min(n, s + step)
                rows = slice(s * per, e * per)
                xs, gs = x[rows], grid[rows]
                go = grad_out[s:e].to(cdtype)  # (n_c, g, C_out/g, L)
                cols = _grid_sample(xs, gs) if (need_w or gmask is not None) else None
                gcols = torch.matmul(w_t, go).to(x.dtype).view(-1, *xs.shape[1:2], *gs.shape[1:3])
                if mask is not None:
                    m = mask[rows]
                    if gmask is not None:
                        gmask[rows] = torch.linalg.vecdot(gcols, cols, dim=1).unsqueeze(1)
                    if cols is not None:
                        cols.mul_(m)
                    gcols.mul_(m)
                if need_w:
                    c = cols.to(cdtype).view(e - s, g, ck, -1)
                    for j in range(g):  # gw[j] += Σ_samples go @ cᵀ, reduced inside one batched matmul
                        gw[j].addbmm_(go[:, j].to(gw.dtype), c[:, j].transpose(1, 2).to(gw.dtype))
                if need_x or need_grid:
                    gxi, ggi = torch.ops.aten.grid_sampler_2d_backward(gcols, xs, gs, 0, 0, False, [need_x, need_grid])
                    if need_x:
                        gx[rows] = gxi
                    if need_grid:
                        ggrid[rows] = ggi
        return gx, ggrid, gmask, (gw.to(weight.dtype) if need_w else None), None, None
