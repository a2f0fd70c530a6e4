"""Shared by the tools: the CPU allocator setting, library errors as one line + exit code 2, COCO stats tables."""

from __future__ import annotations

import os
import platform
import signal
import sys
from collections.abc import Callable, Mapping

import torch

from convblocks import BlockConfigError
from data import DataError
from models.allocator import keep_freed_memory

USER_ERRORS = (BlockConfigError, DataError)  # RecipeError is a BlockConfigError


class Terminated(Exception):
    """SIGTERM (a scheduler stopping the job, ``timeout``, ``kill``), raised in the main thread so that training
    unwinds through Lightning's teardown and the tool ends with one line instead of a worker's traceback."""


def _raise_terminated(signum: int, frame: object) -> None:
    if os.getpid() != _MAIN_PID:  # a forked data-loader worker: end quietly, as SIGTERM's default would
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    _TERMINATED.append(signum)
    # The workers got the same signal; PyTorch's SIGCHLD handler would raise "worker killed" during teardown.
    # A Python no-op, not SIG_DFL: a SIGCHLD already pending would otherwise print "Signal 17 ignored due to
    # race condition" with a traceback when Python gets to it.
    signal.signal(signal.SIGCHLD, _ignore_signal)
    raise Terminated(signal.Signals(signum).name)


def _ignore_signal(signum: int, frame: object) -> None:
    return None


_MAIN_PID = os.getpid()
_TERMINATED: list[int] = []


def run(main: Callable[[], int | None]) -> int:
    """Call ``main``; bad input prints ``error: ...`` (no traceback, unless CONVZOO_DEBUG=1) and returns 2;
    SIGTERM, and Ctrl-C outside Lightning's fit (which shuts down on Ctrl-C itself), print one line and return
    143 or 130 (the last epoch checkpoint stays for ``--resume``).

    Every tool first lets glibc keep freed memory for reuse (``models.allocator``; ``CONVZOO_MALLOC=system``
    turns that off): training steps then stop page-faulting their large tensors in again.
    """
    keep_freed_memory()
    signal.signal(signal.SIGTERM, _raise_terminated)  # Lightning adds its own handler to this one during fit
    try:
        return int(main() or 0)
    except USER_ERRORS as exc:
        if os.environ.get("CONVZOO_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume (the last epoch checkpoint is kept)", file=sys.stderr)
        return 130
    except Exception:  # after a SIGTERM, whatever teardown raised is part of the stop
        if not _TERMINATED:
            raise
        name = signal.Signals(_TERMINATED[0]).name
        print(f"stopped by {name}; resume with --resume (the last epoch checkpoint is kept)", file=sys.stderr)
        # Lightning's teardown has run and checkpoints are written atomically. Leave now: the interpreter's
        # exit handlers would shut the killed data-loader workers down again and print their tracebacks.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(143)


def stats_table(stats: Mapping[str, float], title: str = "") -> str:
    """COCOeval stats as a Markdown table: one header row of names, one row of values."""
    names = list(stats)
    head = "| " + " | ".join(names) + " |"
    rule = "|" + "|".join("---:" for _ in names) + "|"
    row = "| " + " | ".join(f"{stats[n]:.3f}" for n in names) + " |"
    return "\n".join(([title] if title else []) + [head, rule, row])


def machine_info(device: torch.device) -> dict:
    """CPU model, cores, torch threads and versions (and the GPU) for a benchmark's JSON."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
