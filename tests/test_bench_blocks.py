"""tools/bench_blocks.py's measurements: the peak memory of a step, and one quick run end to end."""

import importlib.util
import json
import sys
from pathlib import Path

import torch

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def load_bench():
    sys.path.insert(0, str(TOOLS))  # bench_blocks imports its sibling bench_peers
    try:
        spec = importlib.util.spec_from_file_location("bench_blocks", TOOLS / "bench_blocks.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(TOOLS))


def test_peak_step_bytes_sees_a_freed_temporary_and_what_is_kept():
    bench = load_bench()
    kept = []

    def step():
        temp = torch.ones(4 * 2**20)  # 16 MiB, freed at return
        kept.append(torch.ones(2**20) + temp[: 2**20])  # a 4 MiB temporary and the 4 MiB sum, kept
        del temp

    peak = bench.peak_step_bytes(step, torch.device("cpu"))
    assert 24 * 2**20 <= peak < 25 * 2**20  # all three alive at once; nothing counted that existed before


def test_quick_run_writes_peak_memory_and_ratios(tmp_path, capsys):
    bench = load_bench()
    out = tmp_path / "bench.json"
    blocks = ["conv", "pyconv", "dynamic[unfold]"]  # the last with a named backend
    args = ["--shapes", "2x64x12x10", "--blocks", *blocks, "--reps", "2", "--warmup", "1"]
    assert bench.main([*args, "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["block"] for r in rows] == blocks
    for r in rows:
        assert r["peak_mb"] > 0 and r["train_ms"] > 0
    assert rows[0]["train_x_conv"] == 1.0
    assert "peak MB" in capsys.readouterr().out


def test_a_candidate_that_cannot_run_is_reported_and_the_rest_are_timed(tmp_path, capsys, monkeypatch):
    bench = load_bench()

    class NoBackward(torch.nn.Module):  # as a peer's kernel without a bf16 or backward path would be
        def forward(self, x):
            raise NotImplementedError("no kernel for this dtype")

    monkeypatch.setitem(bench.CANDIDATES, "broken", (lambda c: NoBackward(), "conv"))
    out = tmp_path / "bench.json"
    args = ["--shapes", "2x16x12x10", "--blocks", "conv", "broken", "coordconv", "--reps", "2", "--warmup", "1"]
    assert bench.main([*args, "--out", str(out)]) == 0
    rows = {r["block"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["broken"]["error"] == "NotImplementedError: no kernel for this dtype"
    assert "train_ms" not in rows["broken"]
    assert rows["coordconv"]["train_ms"] > 0 and len(rows["coordconv"]["train_times"]) == 2
    assert "broken                   cannot run: NotImplementedError" in capsys.readouterr().out
