"""Train and evaluate every planned run of a comparison, skipping finished ones and resuming interrupted ones.

A run is finished when its folder holds ``summary.json`` and ``val_results.json`` (the COCO results of the
final validation) for the same resolved recipe; an interrupted run (``last.ckpt`` only) resumes from it.
Each run is scored at its **final** epoch: picking the best epoch on the set we report on would flatter
every variant by its own noise.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..checkpoint import changed_keys
from ..recipe import RecipeError, build_recipe
from ..runner import RunResult, resolve_model, train
from .spec import PlannedRun

RESULTS_FILE = "val_results.json"
_IGNORED = ("train.resume", "train.progress_bar")  # train options that do not change what a run computes


@dataclass
class RunRecord:
    """A finished run: final-epoch stats, history of validations, speed, where its files are."""

    variant: str
    seed: int
    run_dir: str
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    train_images_per_s: float | None = None
    seconds: float = 0.0

    @property
    def results_file(self) -> Path:
        return Path(self.run_dir) / RESULTS_FILE


def _changed_keys(saved: dict[str, Any], run: PlannedRun) -> list[str]:
    """Keys that differ between a saved ``config.yaml`` and the planned run, as ``--resume`` compares them: options
    added since the run was saved take their defaults, so an upgrade does not orphan finished runs."""
    cfg = dict(saved)
    try:
        old = build_recipe(cfg, name=cfg.pop("name", "run"))
    except (RecipeError, ValueError):  # no longer a valid recipe
        return ["recipe"]
    new = resolve_model(run.recipe)  # config.yaml holds the resolved model
    return [k for k in changed_keys(old, new, old_model_partial=True) if k not in _IGNORED]


def run_state(run: PlannedRun) -> str:
    """``done``, ``resume`` or ``new``; a folder holding another recipe's run is a ``RecipeError``."""
    run_dir = run.run_dir
    saved_file = run_dir / "config.yaml"
    if saved_file.is_file():
        changed = _changed_keys(yaml.safe_load(saved_file.read_text()) or {}, run)
        if changed:
            raise RecipeError(
                f"{run_dir} holds a run of another recipe ({changed[0]} differs); delete the "
                "folder to retrain it, or give the comparison another name (name=... / --out)"
            )
    if (run_dir / "summary.json").is_file() and (run_dir / RESULTS_FILE).is_file():
        return "done"
    return "resume" if (run_dir / "checkpoints" / "last.ckpt").is_file() else "new"


def load_record(run: PlannedRun) -> RunRecord:
    """The record of a finished run from its ``summary.json``."""
    summary = json.loads((run.run_dir / "summary.json").read_text())
    history = summary.get("history") or []
    if not history:
        raise RecipeError(f"{run.run_dir}/summary.json: no validation history; delete the folder to retrain the run")
    final = {k: v for k, v in history[-1].items() if k not in ("epoch", "step", "train_seconds")}
    return RunRecord(
        variant=run.variant,
        seed=run.seed,
        run_dir=str(run.run_dir),
        metrics=final,
        history=history,
        train_images_per_s=summary.get("train_images_per_s"),
        seconds=float(summary.get("seconds", 0.0)),
    )


def execute(
    runs: Sequence[PlannedRun],
    log: Callable[[str], None] = print,
    train_fn: Callable[..., RunResult] = train,
) -> list[RunRecord]:
    """Train what is not finished (in order), then return every run's record."""
    records = []
    for i, run in enumerate(runs, 1):
        state = run_state(run)
        tag = f"[{i}/{len(runs)}] {run.variant} seed {run.seed}"
        if state == "done":
            log(f"{tag}: finished earlier, reusing {run.run_dir}")
            records.append(load_record(run))
            continue
        recipe = run.recipe
        if state == "resume":
            log(f"{tag}: resuming {run.run_dir}")
            recipe = recipe.model_copy(update={"train": recipe.train.model_copy(update={"resume": True})})
        else:
            log(f"{tag}: training -> {run.run_dir}")
        start = time.perf_counter()
        train_fn(recipe, results_file=run.run_dir / RESULTS_FILE)
        record = load_record(run)
        log(f"{tag}: AP {record.metrics.get('AP', float('nan')):.4f} ({time.perf_counter() - start:.0f} s)")
        records.append(record)
    return records
