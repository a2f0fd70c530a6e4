"""The CPU allocator setting: freed large tensors are reused without page faults (in a subprocess)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import resource, sys, torch
sys.path.insert(0, {root!r})
from models.allocator import keep_freed_memory
print(keep_freed_memory())
for _ in range(8):  # a training step's pattern: several large tensors, then all freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensors = [torch.empty(n * 2**18).fill_(1.0) for n in (64, 16, 32, 8)]  # 64, 16, 32, 8 MiB
    del tensors
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults_per_allocation(env_value: str) -> tuple[str, list[int]]:
    env = {"CONVZOO_MALLOC": env_value, "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(root=str(ROOT))], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], [int(v) for v in out[1:]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_keep_freed_memory_reuses_pages_and_system_does_not():
    # One step is 120 MiB = 30720 pages of 4 KiB. With "keep", the heap grows during the first steps while
    # small objects settle between the freed blocks; after that the steps reuse freed memory (0 faults on an
    # idle machine). Small allocations can still fragment glibc's heap and fault a block back in now and then
    # (16384 pages in each of two of steps 5-8, seen in a full test run), so steps 5-8 are compared with
    # "system" in the same run: at most half of its faults, which come at every single step.
    took, keep = page_faults_per_allocation("keep")
    assert took == "True"
    took, system = page_faults_per_allocation("system")
    assert took == "False"
    assert min(system[4:]) > 16384, system  # glibc's default: fresh mmaps for the large blocks, every step
    assert 2 * sum(keep[4:]) <= sum(system[4:]), (keep, system)
    assert min(keep[4:]) <= 8192, keep  # some steps reuse (nearly) everything
