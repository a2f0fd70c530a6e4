"""Test-wide settings: never touch the network, keep CPU threads predictable on 2-core machines, and keep the
default run from compiling the CPU kernels (minutes on 2 cores): it tests them where they are built already."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TIMM_FUSED_ATTN", "0")

KERNELS_OFF = (
    "CPU kernels not built: testing the pure-PyTorch paths (make kernels builds them; make test-kernels and "
    "make test-all build and test them)"
)


def pytest_configure(config: pytest.Config) -> None:
    """In the default selection (``-m 'not slow'``) with no build in the cache, switch the compiled kernels off
    (for this process and the tools it starts) instead of building them; any other ``-m`` builds them on first use."""
    if "CONVZOO_CPU_KERNELS" in os.environ or config.option.markexpr != "not slow":
        return
    from convblocks.kernels import cpu_ext

    if not cpu_ext.built():
        os.environ["CONVZOO_CPU_KERNELS"] = "0"
        config.stash[_NOTE] = KERNELS_OFF


_NOTE = pytest.StashKey[str]()


def pytest_report_header(config: pytest.Config) -> str | None:
    return config.stash.get(_NOTE, None)
