"""Shared by the end-to-end tests: repository paths, a tiny training setup, and running a tool."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from convblocks.kernels import cpu_ext, deform_conv2d, use_backend

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared/data/coco_sample"
TINY = [
    "model.input_size=[64, 64]",
    "model.head.deconv_channels=8",
    "data.synthetic.train_images=6",
    "data.synthetic.val_images=3",
    "data.num_workers=0",
    "data.batch_size=4",
    "train.max_epochs=1",
    "train.progress_bar=false",
    "train.log_every_n_steps=1",
    "train.schedule.warmup_steps=0",
]


def tool(name: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / name), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def first_then_slow(cases: list) -> list:
    """The first case in the default run, the others only in ``-m slow``: for checks that cost seconds each
    (``torch.library.opcheck``'s AOT tests) and test one registration, not each geometry."""
    return [cases[0], *(pytest.param(case, marks=pytest.mark.slow) for case in cases[1:])]


# The compiled CPU kernels apply: built (the default run does not build them, see conftest.py) and not switched off.
needs_kernels = pytest.mark.skipif(
    not cpu_ext.available(), reason="CPU kernels off or not built (make test-kernels builds and tests them)"
)


def deform(*args, impl: str):
    """``deform_conv2d(*args)`` with the backend ``impl``."""
    with use_backend(deform_conv2d=impl):
        return deform_conv2d(*args)
