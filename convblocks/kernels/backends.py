"""Which implementation each functional op runs, chosen in one place for the whole process.

Every op has a pure-PyTorch reference and faster formulations that give the same results. ``auto`` picks, per
call, the fastest one that applies to the tensors (device, dtype, tracing); a named backend is for benchmarks
and tests. Set it with ``set_backend``, ``use_backend`` (a context) or, at start-up,
``CONVZOO_BACKEND="dynamic_conv2d=unfold,deform_conv2d=native"``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

BACKENDS: dict[str, tuple[str, ...]] = {
    # fused: the compiled channels-last CPU kernel; native: grid_sample in batch chunks with a hand-written
    # backward; reference: grid_sample columns + matmul through autograd; torchvision: its compiled op.
    "deform_conv2d": ("auto", "fused", "native", "reference", "torchvision"),
    # grouped: per-sample kernels, batch folded into conv groups; unfold: im2col + batched matmul;
    # mixture: all K kernels in one conv, outputs mixed (no batch size in traced graphs).
    "dynamic_conv2d": ("auto", "grouped", "unfold", "mixture"),
    # reference: one F.conv2d per level in the input's layout; direct: the same in channels-last;
    # auto: channels-last on CPU with each grouped level in its fastest equal formulation.
    "pyconv2d": ("auto", "direct", "reference"),
}
ENV = "CONVZOO_BACKEND"

_chosen = dict.fromkeys(BACKENDS, "auto")


def backend(op: str) -> str:
    """The backend ``op`` runs in this process (``auto`` unless set)."""
    return _chosen[op]


def set_backend(op: str, name: str) -> None:
    """Run ``op`` with backend ``name`` from now on (one of ``BACKENDS[op]``)."""
    if op not in BACKENDS:
        raise ValueError(f"unknown op {op!r}; ops with backends: {', '.join(BACKENDS)}")
    if name not in BACKENDS[op]:
        raise ValueError(f"{op} backend must be one of {', '.join(BACKENDS[op])}, got {name!r}")
    _chosen[op] = name


@contextmanager
def use_backend(**choices: str) -> Iterator[None]:
    """``with use_backend(dynamic_conv2d="unfold"):`` runs the ops named with those backends, then restores."""
    before = dict(_chosen)
    try:
        for op, name in choices.items():
            set_backend(op, name)
        yield
    finally:
        _chosen.update(before)


def _from_environment() -> None:
    for item in filter(None, os.environ.get(ENV, "").split(",")):
        op, _, name = item.partition("=")
        try:
            set_backend(op.strip(), name.strip())
        except ValueError as err:
            raise ValueError(f"{ENV}={os.environ[ENV]!r}: {err}") from None


_from_environment()
