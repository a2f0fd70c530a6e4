"""The CPU kernels' build cache is keyed by the sources' contents, not the checkout's path: a second checkout
of the same sources finds the first one's build (torch rebuilds when the source paths change)."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
from pathlib import Path
from types import ModuleType


def _cpu_ext() -> ModuleType:
    for name in ("convblocks.cpu_ext", "convblocks.kernels.cpu_ext"):  # the module may move under kernels/
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError:
            continue
    raise AssertionError("convblocks' cpu_ext module not found")


def _load_copy(module: ModuleType, checkout: Path) -> ModuleType:
    """``module`` and its ``csrc/`` copied into another folder and imported from there."""
    src = Path(module.__file__)
    checkout.mkdir(parents=True)
    shutil.copy(src, checkout / src.name)
    shutil.copytree(module.CSRC, checkout / module.CSRC.name)
    spec = importlib.util.spec_from_file_location("other_checkout_cpu_ext", checkout / src.name)
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    return other


def test_another_checkout_reuses_the_build_and_a_changed_source_does_not(tmp_path: Path) -> None:
    here = _cpu_ext()
    other = _load_copy(here, tmp_path / "other checkout" / "convblocks")
    assert other.CSRC != here.CSRC
    assert other._build_tag() == here._build_tag()  # same extension name, same build folder
    build = tmp_path / "cache" / f"convzoo_cpu_{here._build_tag()}"
    build.mkdir(parents=True)
    mine, theirs = here._stable_sources(build, here._build_tag()), other._stable_sources(build, other._build_tag())
    assert mine == theirs and sorted(p.name for p in mine.iterdir()) == sorted(p.name for p in here.CSRC.iterdir())
    (other.CSRC / "bindings.cpp").write_text((other.CSRC / "bindings.cpp").read_text() + "\n// changed\n")
    assert other._build_tag() != here._build_tag()  # edited sources get their own build
