"""Comparison figures: final AP per variant with error bars, and training curves per variant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..run_logs import read_csv_logs  # noqa: E402
from .runs import RunRecord  # noqa: E402


def plot_ap(rows: Sequence[Mapping[str, Any]], records: Sequence[RunRecord], path: str | Path, title: str) -> None:
    """Bars: mean final AP per variant, error bars ± std over seeds, one dot per seed; a line at the baseline."""
    names = [r["variant"] for r in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 1.5), 3.6))
    means = [100 * r["AP_mean"] for r in rows]
    stds = [100 * r["AP_std"] for r in rows]
    colors = ["0.55" if r["baseline"] else f"C{i}" for i, r in enumerate(rows)]
    ax.bar(names, means, yerr=stds, capsize=4, color=colors, alpha=0.8)
    for i, name in enumerate(names):
        seeds = [100 * r.metrics["AP"] for r in records if r.variant == name]
        ax.scatter([i] * len(seeds), seeds, color="k", s=10, zorder=3)
    base = next((m for m, r in zip(means, rows, strict=True) if r["baseline"]), None)
    if base is not None:
        ax.axhline(base, color="0.3", lw=0.8, ls="--")
    ax.set_ylabel("final AP (%)")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def train_loss(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, train/loss)`` from the run's Lightning CSV logs, resumes included (empty when absent)."""
    rows = [r for r in read_csv_logs(run_dir) if r.get("train/loss")]
    return np.asarray([int(r["step"]) for r in rows]), np.asarray([float(r["train/loss"]) for r in rows])


def plot_curves(records: Sequence[RunRecord], path: str | Path, title: str) -> None:
    """Left: val AP after each validation (mean over seeds, band = min..max). Right: training loss per seed."""
    fig, (ax_ap, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.8))
    variants = list(dict.fromkeys(r.variant for r in records))
    for i, variant in enumerate(variants):
        runs = [r for r in records if r.variant == variant]
        color = f"C{i}"
        epochs = sorted({h["epoch"] for r in runs for h in r.history})
        curves = np.array(
            [[next((100 * h["AP"] for h in r.history if h["epoch"] == e), np.nan) for e in epochs] for r in runs]
        )
        x = np.asarray(epochs) + 1
        ax_ap.plot(x, np.nanmean(curves, 0), "o-", color=color, label=variant, ms=3)
        if len(runs) > 1:
            ax_ap.fill_between(x, np.nanmin(curves, 0), np.nanmax(curves, 0), color=color, alpha=0.15)
        for j, r in enumerate(runs):
            steps, losses = train_loss(r.run_dir)
            if len(steps):
                ax_loss.plot(steps, losses, color=color, lw=0.8, alpha=0.7, label=variant if j == 0 else None)
    ax_ap.set_xlabel("epoch")
    ax_ap.set_ylabel("val AP (%)")
    ax_ap.set_title(f"{title}: val AP (band: min..max over seeds)")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("train loss")
    ax_loss.set_yscale("log")
    ax_loss.set_title("training loss (one line per seed)")
    for ax in (ax_ap, ax_loss):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning(histories: Mapping[str, Sequence[Mapping[str, float]]], path: str | Path, title: str) -> None:
    """Val AP of each run against training minutes (left) and optimizer steps (right), from its history."""
    fig, (ax_time, ax_step) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (name, history) in enumerate(histories.items()):
        ap = [100 * h["AP"] for h in history]
        ax_time.plot([h["train_seconds"] / 60 for h in history], ap, "o-", color=f"C{i}", label=name, ms=3)
        ax_step.plot([h["step"] for h in history], ap, "o-", color=f"C{i}", label=name, ms=3)
    ax_time.set_xlabel("training minutes (validation excluded)")
    ax_step.set_xlabel("optimizer step")
    for ax in (ax_time, ax_step):
        ax.set_ylabel("val AP (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
