"""Shared by the tools: the CPU allocator setting, library errors as one line + exit code 2, COCO stats tables.

Nothing here imports torch: a tool parses its arguments and validates its recipe first, so ``--help`` and a
bad recipe answer in about a second.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from data.errors import DataError
from models.allocator import keep_freed_memory
from models.recipe import RecipeError

if TYPE_CHECKING:
    import torch


def is_user_error(exc: BaseException) -> bool:
    """A library error about the user's input (recipe, data, block config): printed as one line, exit 2."""
    kinds: list[type[BaseException]] = [RecipeError, DataError]
    registry = sys.modules.get("convblocks.registry")  # BlockConfigError can only come from a loaded convblocks
    if registry is not None:
        kinds.append(registry.BlockConfigError)
    return isinstance(exc, tuple(kinds))


class Terminated(Exception):
    """SIGTERM (a scheduler stopping the job, ``timeout``, ``kill``) outside Lightning's fit, raised in the main
    thread so that the tool ends with one line instead of a worker's traceback."""


def _on_sigterm(signum: int, frame: object) -> None:
    """Notes the stop. Inside fit Lightning's own handler runs first and stops at the end of the current step
    (a ``SystemExit``): raising here could land in a ``__del__`` or a logging lock and be swallowed. Elsewhere
    (building the data, evaluating) it raises ``Terminated``."""
    if os.getpid() != _MAIN_PID:  # a forked data-loader worker: end quietly, as SIGTERM's default would
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    if _TERMINATED:  # already stopping: a repeated signal must not raise again inside the teardown
        return
    _TERMINATED.append(signum)
    # The workers got the same signal; PyTorch's SIGCHLD handler would raise "worker killed" during teardown.
    # A Python no-op, not SIG_DFL: a SIGCHLD already pending would otherwise print "Signal 17 ignored due to
    # race condition" with a traceback when Python gets to it.
    signal.signal(signal.SIGCHLD, _ignore_signal)
    if signal.getsignal(signal.SIGTERM) is _on_sigterm:  # not inside Lightning's handler chain
        raise Terminated(signal.Signals(signum).name)


def _ignore_signal(signum: int, frame: object) -> None:
    return None


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C: noted (Lightning turns it into ``exit(1)`` after its graceful shutdown), then Python's own."""
    if os.getpid() == _MAIN_PID:
        _INTERRUPTED.append(signum)
    signal.default_int_handler(signum, frame)


_MAIN_PID = os.getpid()
_TERMINATED: list[int] = []
_INTERRUPTED: list[int] = []


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (a test's capture, a redirected stream)."""

    @property
    def stream(self):  # noqa: ANN201 - logging's own attribute
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def show_library_messages() -> None:
    """convzoo's own log lines (``data``, ``models``: skip counts, data-set sizes) on stderr as plain lines."""
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("data", "models"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line; for an error re-raised from a data-loader worker (whose message is
    "Caught X in DataLoader worker process N" plus the worker's traceback), the worker's own message."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) > 1 and "Traceback" in lines[1]:
        return lines[-1].split(": ", 1)[-1] if lines[-1].split(": ", 1)[0].endswith("Error") else lines[-1]
    return lines[0]


def run(main: Callable[[], int | None]) -> int:
    """Call ``main``; bad input prints ``error: ...`` (no traceback, unless CONVZOO_DEBUG=1) and returns 2;
    SIGTERM and Ctrl-C (in Lightning's fit too, after its graceful shutdown) print one line and return
    143 or 130 (the last epoch checkpoint stays for ``--resume``).

    Every tool first lets glibc keep freed memory for reuse (``models.allocator``; ``CONVZOO_MALLOC=system``
    turns that off): training steps then stop page-faulting their large tensors in again.
    """
    keep_freed_memory()
    show_library_messages()
    signal.signal(signal.SIGTERM, _on_sigterm)  # Lightning puts its own handler in front during fit
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _interrupt)
    try:
        return int(main() or 0)
    except KeyboardInterrupt:
        return _interrupted()
    except BaseException as exc:  # after a SIGTERM, Lightning's stop or whatever teardown raised is part of it
        if _TERMINATED:
            _stopped()
        if isinstance(exc, SystemExit) and _INTERRUPTED:  # Lightning's exit(1) after Ctrl-C in fit
            return _interrupted()
        if isinstance(exc, Exception) and is_user_error(exc) and not os.environ.get("CONVZOO_DEBUG"):
            print(f"error: {one_line(exc)}", file=sys.stderr)
            return 2
        raise


def _interrupted() -> int:
    print("interrupted; resume with --resume (the last epoch checkpoint is kept)", file=sys.stderr)
    return 130


def _stopped() -> None:
    """One line and exit 143 (128 + SIGTERM). Lightning's teardown has run and checkpoints are written
    atomically. Leave now: the interpreter's exit handlers would shut the killed data-loader workers down again
    and print their tracebacks."""
    name = signal.Signals(_TERMINATED[0]).name
    print(f"stopped by {name}; resume with --resume (the last epoch checkpoint is kept)", file=sys.stderr)
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
    import torch

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


def write_report(path: str, meta: dict, rows: list) -> None:
    """A model benchmark's JSON (``{"meta": ..., "models": rows}``) at ``path``, folders created; says where."""
    import json
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"meta": meta, "models": rows}, indent=2))
    print(f"wrote {path}")
