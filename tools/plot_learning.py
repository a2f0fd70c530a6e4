"""Learning curves of finished (or running) runs: val AP against training minutes and optimizer steps.

Reads each finished run's ``summary.json``, prints a Markdown table, and writes the figure and the curves as
JSON. Example::

    python tools/plot_learning.py runs/demo runs/pose_baseline_long --out docs/results/learning/learning.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _cli import run

from models.recipe import RecipeError


def read_history(run_dir: Path) -> list[dict[str, float]]:
    """The validation history in a finished run folder's summary.json."""
    summary = run_dir / "summary.json"
    if not summary.is_file():
        raise RecipeError(f"{run_dir}: no summary.json; give the run folder of a finished tools/train.py run")
    return json.loads(summary.read_text())["history"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (train.run_dir)")
    parser.add_argument("--out", type=Path, default=Path("runs/learning.png"), help="figure (and .json beside it)")
    parser.add_argument("--title", default="val AP (held-out images, GT boxes)")
    args = parser.parse_args()
    histories = {run.name: read_history(run) for run in args.runs}
    missing = [name for name, h in histories.items() if h and "train_seconds" not in h[0]]
    if missing:
        raise RecipeError(f"{', '.join(missing)}: history has no step/train_seconds; rerun with this version")
    print("| run | epoch | step | training min | val AP |\n|---|---:|---:|---:|---:|")
    for name, history in histories.items():
        for h in history:
            print(
                f"| {name} | {int(h['epoch']) + 1} | {int(h['step'])} | {h['train_seconds'] / 60:.1f} | {h['AP']:.3f} |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from models.compare.plots import plot_learning  # matplotlib: not needed for --help or a missing run

    plot_learning(histories, args.out, args.title)
    args.out.with_suffix(".json").write_text(json.dumps(histories, indent=1))
    print(f"wrote {args.out} and {args.out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
