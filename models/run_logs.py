"""A run's CSV logs across resumes: each resume logs into its own folder, so nothing logged before is lost.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when it starts in a folder that already holds one, which
is exactly what resuming does. A fresh run logs to ``<run_dir>/logs/metrics.csv``; the k-th resume to
``<run_dir>/logs/resume<k>/metrics.csv``. ``read_csv_logs`` merges them in order.
"""

from __future__ import annotations

import csv
from pathlib import Path


def _resume_dirs(logs: Path) -> list[Path]:
    """``logs/resume1``, ``logs/resume2``, ... as far as they exist."""
    dirs: list[Path] = []
    while (logs / f"resume{len(dirs) + 1}").exists():
        dirs.append(logs / f"resume{len(dirs) + 1}")
    return dirs


def csv_log_version(run_dir: str | Path, resuming: bool) -> str:
    """The ``CSVLogger`` version (sub-folder of ``logs/``) for this start of the run: ``""`` or ``resume<k>``."""
    logs = Path(run_dir) / "logs"
    if not resuming or not (logs / "metrics.csv").is_file():
        return ""
    return f"resume{len(_resume_dirs(logs)) + 1}"


def read_csv_logs(run_dir: str | Path) -> list[dict[str, str]]:
    """Every logged row of a run, the first start then each resume; a step logged again after a resume
    (the work lost since the last checkpoint, redone) keeps the later value only."""
    logs = Path(run_dir) / "logs"
    parts = [logs / "metrics.csv", *(d / "metrics.csv" for d in _resume_dirs(logs))]
    rows: list[dict[str, str]] = []
    for path in parts:
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            new = list(csv.DictReader(f))
        first = min((int(r["step"]) for r in new if r.get("step")), default=None)
        if first is not None:
            rows = [r for r in rows if not r.get("step") or int(r["step"]) < first]
        rows += new
    return rows
