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
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 * 2**20).fill_(1.0)  # 64 MiB: above glibc's largest mmap threshold
    del t
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
    # 64 MiB is 16384 pages of 4 KiB. The heap may grow once or twice while Python's small objects settle
    # around the freed block; after that, each allocation is served from freed memory.
    took, faults = page_faults_per_allocation("keep")
    assert took == "True"
    assert sum(faults[3:]) < 1000, faults
    took, faults = page_faults_per_allocation("system")
    assert took == "False"
    assert min(faults[3:]) > 8000, faults  # glibc's default: a fresh mmap for every allocation
