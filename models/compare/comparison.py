"""One comparison end to end: plan the runs, train what is missing, score, bootstrap, cost, report.

Writes into the comparison folder: ``results.md`` (table + how to read it), ``summary.csv`` (one row per
variant), ``runs.csv`` (one row per run), ``comparison.json`` (everything), ``ap.png`` and ``curves.png``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..runner import RunResult, build_datamodule, train
from ..tasks import get_task
from .bootstrap import load_resampler, paired_bootstrap
from .cost import model_costs
from .plots import plot_ap, plot_curves
from .report import markdown_table, run_rows, summarize, write_csv
from .runs import RunRecord, execute
from .spec import ComparisonSpec, PlannedRun, plan_runs


@dataclass
class ComparisonResult:
    """The per-variant rows (see ``report.summarize``), the runs, the table and the files written."""

    rows: list[dict[str, Any]]
    records: list[RunRecord]
    table: str
    files: dict[str, str]
    seconds: float


def bootstrap_diffs(
    runs: Sequence[PlannedRun], records: Sequence[RunRecord], baseline: str, n_boot: int
) -> dict[str, dict[str, dict[str, float]]]:
    """Paired image+seed bootstrap of ΔAP and ΔAP50 to ``baseline`` from every run's final COCO results."""
    recipe = runs[0].recipe
    dm = build_datamodule(recipe, train=False)
    dm.setup("validate")
    evaluator = dm.evaluator(recipe.eval.oks_nms, recipe.eval.visible_thr)
    image_ids = evaluator.image_ids or sorted(evaluator.gt.getImgIds())
    iou_type = get_task(recipe.task).iou_type
    sigmas = getattr(evaluator, "sigmas", None)
    resamplers: dict[str, list[Any]] = {}
    for r in records:
        resamplers.setdefault(r.variant, []).append(
            load_resampler(evaluator.gt, r.results_file, iou_type, image_ids, sigmas)
        )
    return paired_bootstrap(resamplers, baseline, n_boot)


def _notes(spec: ComparisonSpec, n_boot: int) -> str:
    seeds = ", ".join(str(s) for s in spec.seeds)
    return (
        f"Final-epoch COCO stats in percent, mean ± std over seeds ({seeds}); the baseline is "
        f"**{spec.baseline_name}**. ΔAP is the difference of mean AP to the baseline with a 95 % interval from "
        f"{n_boot} paired bootstrap replicates (val images resampled, shared by all variants; seeds resampled per "
        "variant): *better*/*worse* when the interval excludes 0, else *within noise*. GFLOPs: one forward at "
        "the model's input size (convs and matmuls; deformable sampling not counted). Latency: median eval "
        "forward of one input, timed round-robin in the same process (no flip test). Train img/s: median over "
        "seeds of each run's training throughput."
    )


def run_comparison(
    spec: ComparisonSpec,
    folder: str | Path = ".",
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
    train_fn: Callable[..., RunResult] = train,
    device: str = "cpu",
) -> ComparisonResult:
    """Train/evaluate every (variant, seed), then write the report files into ``spec.out``."""
    start = time.perf_counter()
    runs = plan_runs(spec, folder, overrides)
    records = execute(runs, log, train_fn)
    stats = get_task(runs[0].recipe.task).stats
    baseline = spec.baseline_name
    log(f"bootstrap: {spec.bootstrap} paired replicates over images and seeds")
    diffs = bootstrap_diffs(runs, records, baseline, spec.bootstrap)
    log("costs: parameters, FLOPs, latency (round-robin)")
    recipes = {r.variant: r.recipe for r in runs if r.seed == spec.seeds[0]}
    costs = model_costs(recipes, reps=spec.latency_reps, device=device)
    rows = summarize(records, baseline, stats, diffs, costs)
    table = markdown_table(rows, stats)
    out = spec.out
    out.mkdir(parents=True, exist_ok=True)
    files = {name: str(out / name) for name in ("results.md", "summary.csv", "runs.csv", "comparison.json")}
    files.update(ap_plot=str(out / "ap.png"), curves_plot=str(out / "curves.png"))
    write_csv(files["summary.csv"], rows)
    write_csv(files["runs.csv"], run_rows(records, stats))
    plot_ap(rows, records, files["ap_plot"], f"{spec.name}: final AP")
    plot_curves(records, files["curves_plot"], spec.name)
    seconds = time.perf_counter() - start
    notes = _notes(spec, spec.bootstrap)
    Path(files["results.md"]).write_text(
        f"# {spec.name}\n\n{table}\n\n{notes}\n\n![AP](ap.png)\n\n![curves](curves.png)\n"
    )
    Path(files["comparison.json"]).write_text(
        json.dumps(
            {
                "spec": spec.model_dump(mode="json"),
                "rows": rows,
                "runs": run_rows(records, stats),
                "seconds": seconds,
            },
            indent=1,
        )
    )
    return ComparisonResult(rows, records, table, files, seconds)
