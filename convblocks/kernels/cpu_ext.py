"""convzoo's compiled CPU kernels (``csrc/*.cpp``): built on first use, one extension module for all.

``torch.utils.cpp_extension`` compiles them once per machine (g++ and the ``ninja`` package; cached under
``TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``), with ``-march=native``, so the cache
is keyed by the CPU model and flags and by the sources' contents (compiled from a copy under the cache, so
another checkout of the same sources reuses the build). The first build says so in one line. Where the build
fails, ``extension()`` warns once and returns None, and every caller runs its pure-PyTorch path.
``CONVZOO_CPU_KERNELS=0`` switches them all off.
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

CSRC = Path(__file__).with_name("csrc")
SOURCES = (
    "deform_sample.cpp",
    "grouped_forward.cpp",
    "grouped_wgrad.cpp",
    "grouped_dgrad.cpp",
    "group_sum.cpp",
    "transpose.cpp",
    "im2col.cpp",
    "kernel_mix.cpp",
    "bindings.cpp",
)


def _build_tag() -> str:
    """Short hash of the CPU model and flags (the build uses ``-march=native``: one build per CPU kind) and of
    the shared headers (``csrc/*.h``: torch rebuilds when a listed source changes, not a header it includes)."""
    text = platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        text += "".join([line for line in info.splitlines() if line.startswith(("model name", "flags"))][:2])
    except OSError:
        pass
    text += "".join(path.read_text() for path in sorted(CSRC.glob("*.[ch]*")))
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _stable_sources(build_dir: Path, tag: str) -> Path:
    """The sources copied beside the build (same path for every checkout: torch rebuilds when paths change)."""
    folder = build_dir.parent / f"convzoo_src_{tag}"
    if not folder.is_dir():
        tmp = build_dir.parent / f".convzoo_src_{tag}.{os.getpid()}"
        shutil.copytree(CSRC, tmp, dirs_exist_ok=True)
        try:
            tmp.rename(folder)
        except OSError:  # another process got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _ensure_ninja() -> None:
    """torch's builder runs ``ninja`` from PATH; the ``ninja`` wheel in the venv is not on PATH by itself."""
    if shutil.which("ninja"):
        return
    try:
        import ninja

        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass


def _build_dir() -> tuple[str, Path]:
    """The extension's name and build folder (under ``TORCH_EXTENSIONS_DIR``)."""
    from torch.utils.cpp_extension import _get_build_directory

    name = f"convzoo_cpu_{_build_tag()}"
    return name, Path(_get_build_directory(name, verbose=False))


def built() -> bool:
    """Whether the extension is already compiled for these sources and this CPU (nothing is built here)."""
    name, build_dir = _build_dir()
    return (build_dir / f"{name}.so").is_file()


@lru_cache(maxsize=1)
def extension() -> ModuleType | None:
    """The compiled extension, or None (with one warning saying why) where it cannot be built or is off."""
    if os.environ.get("CONVZOO_CPU_KERNELS", "1") == "0":
        return None
    quiet = logging.getLogger("torch.utils.cpp_extension")  # it warns about CUDA_HOME on a CPU-only machine
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import load

        _ensure_ninja()
        flags = ["-O3", "-fopenmp"] + (["-march=native"] if platform.machine() in ("x86_64", "AMD64") else [])
        name, build_dir = _build_dir()
        tag = name.removeprefix("convzoo_cpu_")
        if not (build_dir / f"{name}.so").is_file():
            logging.getLogger(__name__).warning(
                "convzoo: building the CPU kernels into %s (once per machine; 1-7 min on 2 cores; "
                "CONVZOO_CPU_KERNELS=0 skips them)", build_dir,
            )  # fmt: skip
        src = _stable_sources(build_dir, tag)
        return load(
            name=name,
            sources=[str(src / file) for file in SOURCES],
            extra_cflags=flags,
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as err:  # noqa: BLE001 - any build failure means: use the pure-PyTorch path
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        warnings.warn(
            "convzoo: the CPU kernels (deformable conv, PyConv, layout changes, dynamic conv mix) could not be "
            f"built ({first}); "
            "using the pure-PyTorch paths. Install g++ and ninja to get them, or set CONVZOO_CPU_KERNELS=0 "
            "to silence this.",
            stacklevel=2,
        )
        return None
    finally:
        quiet.setLevel(level)


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the extension is built (a constant to ``torch.compile``, which cannot trace the build)."""
    return extension() is not None


def usable(x: torch.Tensor) -> bool:
    """The compiled kernels apply to ``x``: a CPU tensor, the extension built, and no ``jit.trace`` or
    ``torch.export`` capture (their graphs are meant to run without it; ``torch.compile`` keeps the ops)."""
    capturing = torch.jit.is_tracing() or torch.compiler.is_exporting()
    return x.device.type == "cpu" and not capturing and available()


def float_kernels_usable(*tensors: torch.Tensor) -> bool:
    """The float kernels (group sums, grouped forward and weight gradient, kernel mix, im2col) apply: float32 or
    float64 tensors of one dtype, no CPU autocast (their inputs would meet lower-precision gradients), ``usable``."""
    first = tensors[0]
    return (
        first.dtype in (torch.float32, torch.float64)
        and all(t.dtype == first.dtype for t in tensors)
        and not torch.is_autocast_enabled("cpu")
        and usable(first)
    )
