"""The comparison table: per variant mean ± std over seeds, the difference to the baseline with its
bootstrap interval, and costs; written as Markdown and CSV (plus one CSV row per run)."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .runs import RunRecord


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def verdict(diff: Mapping[str, float] | None) -> str:
    """``better``/``worse`` when the 95 % interval excludes 0, else ``within noise``."""
    if diff is None or math.isnan(diff["low"]):
        return ""
    if diff["low"] > 0:
        return "better"
    if diff["high"] < 0:
        return "worse"
    return "within noise"


def summarize(
    records: Sequence[RunRecord],
    baseline: str,
    stats: Sequence[str],
    diffs: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None,
    costs: Mapping[str, Mapping[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """One row per variant (in first-seen order): ``<stat>_mean``/``<stat>_std``, seeds, diff, costs."""
    by_variant: dict[str, list[RunRecord]] = {}
    for r in records:
        by_variant.setdefault(r.variant, []).append(r)
    rows = []
    for variant, runs in by_variant.items():
        row: dict[str, Any] = {"variant": variant, "seeds": len(runs), "baseline": variant == baseline}
        for stat in stats:
            row[f"{stat}_mean"], row[f"{stat}_std"] = _mean_std([r.metrics.get(stat, float("nan")) for r in runs])
        for stat, d in (diffs or {}).get(variant, {}).items():
            row.update({f"d{stat}": d["diff"], f"d{stat}_low": d["low"], f"d{stat}_high": d["high"]})
            row[f"p_d{stat}_le_0"] = d["p_le_0"]
            row[f"verdict_{stat}"] = "baseline" if variant == baseline else verdict(d)
        speeds = [r.train_images_per_s for r in runs if r.train_images_per_s]
        row["train_img_s"] = statistics.median(speeds) if speeds else float("nan")
        row["train_min"] = statistics.fmean(r.seconds for r in runs) / 60
        row.update((costs or {}).get(variant, {}))
        rows.append(row)
    return rows


def _pct(x: float) -> str:
    """Percent with two decimals; COCOeval's -1 (no objects of that kind) and NaN show as a dash."""
    return "–" if math.isnan(x) or x < 0 else f"{100 * x:.2f}"


def markdown_table(rows: Sequence[Mapping[str, Any]], stats: Sequence[str]) -> str:
    """AP-type stats in percent (mean ± std over seeds); ΔAP and ΔAP50 with 95 % bootstrap intervals."""
    head = ["variant", "seeds", *stats, "ΔAP [95% CI]", "ΔAP50 [95% CI]", "params (M)", "GFLOPs", "train img/s"]
    head.append("latency ms")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|"]
    for r in rows:
        cells = [f"**{r['variant']}**" if r["baseline"] else r["variant"], str(r["seeds"])]
        cells += [f"{_pct(r[f'{s}_mean'])} ± {_pct(r[f'{s}_std'])}" if r[f"{s}_mean"] >= 0 else "–" for s in stats]
        for stat in ("AP", "AP50"):
            if f"d{stat}" in r and not r["baseline"]:
                d, lo, hi = (100 * r[f"d{stat}{k}"] for k in ("", "_low", "_high"))
                cells.append(f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}] {r[f'verdict_{stat}']}")
            else:
                cells.append("–")
        cells.append(f"{r['params']:.2f}" if "params" in r else "–")
        cells.append(f"{r['gflops']:.3f}" if "gflops" in r else "–")
        cells.append("–" if math.isnan(r["train_img_s"]) else f"{r['train_img_s']:.0f}")
        cells.append(f"{r['latency_ms']:.1f}" if "latency_ms" in r else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows as CSV, columns in first-seen order across rows."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


def run_rows(records: Sequence[RunRecord], stats: Sequence[str]) -> list[dict[str, Any]]:
    """One row per run (variant, seed, final-epoch stats, speed): the raw numbers behind the table."""
    return [
        {
            "variant": r.variant,
            "seed": r.seed,
            **{s: r.metrics.get(s) for s in stats},
            "train_img_s": r.train_images_per_s,
            "seconds": r.seconds,
            "run_dir": r.run_dir,
        }
        for r in records
    ]
