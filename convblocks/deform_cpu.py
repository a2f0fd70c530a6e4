"""The fused CPU kernel for deformable convolution: build on first use, and its autograd function.

``csrc/deform_sample.cpp`` samples all kernel taps of a channels-last input into columns with one set of
bilinear weights per point and a vectorised loop over channels, and does the whole backward (input,
offset and mask gradients) in one pass. It is compiled once per machine with
``torch.utils.cpp_extension`` (g++ and ninja; cached under ``TORCH_EXTENSIONS_DIR``). Where it cannot be
built, ``kernel()`` returns None with one warning and ``deform_conv2d`` falls back to ``native``.
``CONVZOO_DEFORM_KERNEL=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import warnings
from functools import lru_cache
from pathlib import Path
from types import ModuleType

import torch
from torch.autograd.function import once_differentiable

from .deform_fused import chunk_size

SOURCE = Path(__file__).with_name("csrc") / "deform_sample.cpp"


def _machine_tag() -> str:
    """Short hash of the CPU model and flags: the build uses ``-march=native``, so one build per CPU kind."""
    text = platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        text += "".join([line for line in info.splitlines() if line.startswith(("model name", "flags"))][:2])
    except OSError:
        pass
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _ensure_ninja() -> None:
    """torch's builder runs ``ninja`` from PATH; the ``ninja`` wheel in the venv is not on PATH by itself."""
    if shutil.which("ninja"):
        return
    try:
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass


@lru_cache(maxsize=1)
def kernel() -> ModuleType | None:
    """The compiled extension, or None (with one warning saying why) where it cannot be built or is off."""
    if os.environ.get("CONVZOO_DEFORM_KERNEL", "1") == "0":
        return None
    quiet = logging.getLogger("torch.utils.cpp_extension")  # it warns about CUDA_HOME on a CPU-only machine
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import load

        _ensure_ninja()
        flags = ["-O3", "-fopenmp"] + (["-march=native"] if platform.machine() in ("x86_64", "AMD64") else [])
        return load(
            name=f"convzoo_deform_sample_{_machine_tag()}",
            sources=[str(SOURCE)],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as err:  # noqa: BLE001 - any build failure means: use the pure-PyTorch path
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        warnings.warn(
            f"convzoo: the fused CPU deformable-conv kernel could not be built ({first}); using impl='native'. "
            "Install g++ and ninja to get it, or set CONVZOO_DEFORM_KERNEL=0 to silence this.",
            stacklevel=2,
        )
        return None
    finally:
        quiet.setLevel(level)


class DeformFusedCPU(torch.autograd.Function):
    """``out[n] = W @ columns(x[n], offset[n], mask[n])`` with the fused kernel, in batch chunks.

    Shapes: ``x (N, C, H, W)``, ``offset (N, 2·G·K, H_out, W_out)``, ``mask (N, G·K, H_out, W_out)`` or None,
    ``weight (C_out, C/groups, kh, kw)``; returns ``(N, C_out, H_out·W_out)`` in ``compute_dtype``.
    Only the channels-last input, offsets and mask are kept for backward; columns are recomputed.
    """

    @staticmethod
    def forward(ctx, x, offset, mask, weight, geometry, compute_dtype):
        ext = kernel()
        stride, padding, dilation, groups = geometry
        pos = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast("cpu", enabled=False):
            xl = x.to(pos).permute(0, 2, 3, 1).contiguous()  # (N, H, W, C)
            off = offset.to(pos).contiguous()
            m = mask.to(pos).contiguous() if mask is not None else torch.empty(0, dtype=pos)  # empty: no mask
            w = _weight_matrix(weight, groups).to(compute_dtype)  # (g, C_out/g, K·C/g)
            n, kh, kw = x.shape[0], *weight.shape[-2:]
            args = ([kh, kw], list(stride), list(padding), list(dilation), groups)
            step = chunk_size(n, x.shape[1] * kh * kw * off.shape[-2] * off.shape[-1] * xl.element_size())
            outs = []
            for s in range(0, n, step):
                e = min(n, s + step)
                cols = ext.sample_columns(xl[s:e], off[s:e], m[s:e], *args)
                outs.append(_matmul(w, cols.to(compute_dtype), groups))
            out = torch.cat(outs) if len(outs) > 1 else outs[0]
        ctx.save_for_backward(xl, off, m, weight)
        ctx.args, ctx.step, ctx.compute_dtype, ctx.x_dtype = args, step, compute_dtype, x.dtype
        ctx.off_dtype, ctx.mask_dtype = offset.dtype, (mask.dtype if mask is not None else None)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        xl, off, m, weight = ctx.saved_tensors
        ext, args, step, cdtype = kernel(), ctx.args, ctx.step, ctx.compute_dtype
        groups = args[-1]
        need_x, need_off, need_mask, need_w = ctx.needs_input_grad[:4]
        n = xl.shape[0]
        w = _weight_matrix(weight, groups).to(cdtype)  # (g, C_out/g, K·C/g)
        acc = torch.float64 if cdtype == torch.float64 else torch.float32
        gw = torch.zeros(w.shape, dtype=acc) if need_w else None
        gx = torch.empty_like(xl) if need_x else None
        goff = torch.empty_like(off) if need_off else None
        gmask = torch.empty_like(m) if (need_mask and m.numel()) else None
        grad_out = grad_out.contiguous()
        with torch.autocast("cpu", enabled=False):
            for s in range(0, n, step):
                e = min(n, s + step)
                go = grad_out[s:e].to(cdtype).view(e - s, groups, w.shape[1], -1)  # (n_c, g, C_out/g, L)
                if need_w:
                    cols = ext.sample_columns(xl[s:e], off[s:e], m[s:e], *args).to(acc)
                    cols = cols.view(e - s, -1, groups, w.shape[2])
                    for j in range(groups):
                        gw[j].addbmm_(go[:, j].to(acc), cols[:, :, j])
                if need_x or need_off or gmask is not None:
                    gcols = torch.matmul(go.transpose(2, 3), w)  # (n_c, g, L, K·C/g)
                    gcols = gcols.transpose(1, 2).reshape(e - s, -1, groups * w.shape[2]).to(xl.dtype).contiguous()
                    gxi, goi, gmi = ext.sample_columns_backward(
                        gcols, xl[s:e], off[s:e], m[s:e], *args, need_x, need_off, gmask is not None
                    )
                    if need_x:
                        gx[s:e] = gxi
                    if need_off:
                        goff[s:e] = goi
                    if gmask is not None:
                        gmask[s:e] = gmi
        if need_w:
            kh, kw = weight.shape[-2:]
            cg = weight.shape[1]
            gw = gw.view(weight.shape[0], kh, kw, cg).permute(0, 3, 1, 2).to(weight.dtype)
        gx = gx.permute(0, 3, 1, 2).to(ctx.x_dtype) if need_x else None
        goff = goff.to(ctx.off_dtype) if need_off else None
        gmask = gmask.to(ctx.mask_dtype) if gmask is not None else None
        return gx, goff, gmask, gw, None, None


def _weight_matrix(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``(C_out, C/g, kh, kw)`` → ``(g, C_out/g, kh·kw·C/g)``, tap-major like the kernel's columns."""
    cout, cg, kh, kw = weight.shape
    return weight.permute(0, 2, 3, 1).reshape(groups, cout // groups, kh * kw * cg)


def _matmul(w: torch.Tensor, cols: torch.Tensor, groups: int) -> torch.Tensor:
    """``w (g, C_out/g, KC_g)`` times columns ``(n, L, g·KC_g)`` → ``(n, C_out, L)``."""
    n, length = cols.shape[:2]
    if groups == 1:
        return torch.matmul(w[0], cols.transpose(1, 2))
    cols = cols.view(n, length, groups, -1).permute(0, 2, 3, 1)  # (n, g, KC_g, L)
    return torch.matmul(w, cols).reshape(n, -1, length)
