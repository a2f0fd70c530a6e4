"""Ctrl-C (SIGINT to the terminal's process group) and ``kill`` (SIGTERM to the main process) of a training with
data-loader workers: one line, exit 130 or 143, and no process left behind. Slow: each trains to a checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, TINY

BASE = ROOT / "configs/pose_baseline.yaml"


def descendants(pid: int) -> set[int]:
    """Every process under ``pid`` (Linux /proc: each thread's ``children``)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found |= {child} | descendants(child)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "group", "code", "line"),
    [
        (signal.SIGINT, True, 130, "interrupted; resume with --resume"),  # Ctrl-C: the whole foreground group
        (signal.SIGTERM, False, 143, "stopped by SIGTERM; resume with --resume"),  # kill PID: the main process
    ],
    ids=["ctrl-c", "kill"],
)
def test_stopping_a_training_with_workers_leaves_no_process(signum, group, code, line, tmp_path: Path) -> None:
    run = [*TINY, "train.max_epochs=500", "data.num_workers=2", f"train.run_dir={tmp_path / 'run'}"]
    cmd = [sys.executable, str(ROOT / "tools/train.py"), str(BASE), *run]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    last, seen, deadline = tmp_path / "run/checkpoints/last.ckpt", set(), time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline and not (last.is_file() and len(seen) >= 2):
        seen |= descendants(proc.pid)
        time.sleep(0.05)
    assert proc.poll() is None and len(seen) >= 2, "no data-loader workers seen"
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1].startswith(line)
    end = time.monotonic() + 10
    while any(alive(p) for p in seen) and time.monotonic() < end:
        time.sleep(0.1)
    assert not [p for p in seen if alive(p)]
    assert "weights_only" not in err and "Tip:" not in err and "Warning" not in err  # clean output


def test_the_tools_sigterm_handler_raises_only_outside_lightnings_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inside fit Lightning stops at a step boundary; an exception raised from the handler there could land in a
    ``__del__`` or a logging lock and be swallowed. Outside fit the handler raises ``Terminated``."""
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    import _cli

    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGCHLD)
    try:
        monkeypatch.setattr(_cli, "_TERMINATED", [])
        signal.signal(signal.SIGTERM, lambda signum, frame: _cli._on_sigterm(signum, frame))  # a chain, as in fit
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert _cli._TERMINATED == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGCHLD) is _cli._ignore_signal
        monkeypatch.setattr(_cli, "_TERMINATED", [])
        signal.signal(signal.SIGTERM, _cli._on_sigterm)
        with pytest.raises(_cli.Terminated, match="SIGTERM"):
            _cli._on_sigterm(signal.SIGTERM, None)
    finally:
        signal.signal(signal.SIGTERM, saved[0])
        signal.signal(signal.SIGCHLD, saved[1])
