"""A run's CSV logs across resumes: each resume logs into its own folder, so nothing logged before is lost.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when it starts in a folder that already holds one, which
is exactly what resuming does. A fresh run logs to ``<run_dir>/logs/metrics.csv``; the k-th resume to
``<run_dir>/logs/resume<k>/metrics.csv``. ``read_csv_logs`` merges them in order.
"""

from __future__ import annotations

import csv
from pathlib import Path


def csv_log_version(run_dir: str | Path, resuming: bool) -> str:
    """The ``CSVLogger`` version (sub-folder of ``logs/``) for this start of the run: ``""`` or ``resume<k>``."""
    logs = Path(run_dir) / "logs"
    if not resuming or not (logs / "metrics.csv").is_file():
        return ""
    k = 1
    while (logs / f"resume{k}").exists():
        k += 1
    return f"resume{k}"


def read_csv_logs(run_dir: str | Path) -> list[dict[str, str]]:
    """Every logged row of a run, the first start then each resume; a step logged again after a resume
    (the work lost since the last checkpoint, redone) keeps the later value only."""
    logs = Path(run_dir) / "logs"
    parts = [logs / "metrics.csv"]
    k = 1
    while (logs / f"resume{k}").exists():
        parts.append(logs / f"resume{k}" / "metrics.csv")
        k += 1
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
