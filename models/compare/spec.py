"""Comparison specs: a base recipe, named variants, seeds → one recipe per (variant, seed) run.

A comparison YAML (paths relative to the file)::

    name: pose_blocks                 # output: runs/compare/pose_blocks/
    base: ../pose_baseline.yaml
    seeds: [0, 1, 2]
    overrides: [train.max_epochs=8]   # applied to every variant
    baseline: baseline                # differences are taken to this variant (default: the first)
    variants:
      baseline: {}                    # the base as it is
      coordconv: ../pose_coordconv.yaml                          # a recipe file
      dcn+coordconv: {model: {head: {blocks: [...]}}}          # a mapping merged onto the base

``from_configs`` builds the same from a plain list of recipe files (variant = file stem, baseline = first).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from data.config import Strict

from ..recipe import Recipe, RecipeError, apply_overrides, build_recipe, check_run_name, merge_configs, read_config

_NAME = re.compile(r"^[A-Za-z0-9_.+\-]+$")


class ComparisonSpec(Strict):
    """What to compare: variants of one task, the seeds, and where the runs go."""

    name: str = "comparison"
    base: str | None = None
    variants: dict[str, str | dict[str, Any]]
    baseline: str | None = None
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    overrides: list[str] = Field(default_factory=list)
    out_dir: str | None = None
    bootstrap: int = Field(1000, ge=0)
    latency_reps: int = Field(20, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_run_name(name)

    @field_validator("variants")
    @classmethod
    def _names(cls, variants: dict[str, Any]) -> dict[str, Any]:
        if not variants:
            raise ValueError("needs at least one variant")
        for name in variants:
            if not _NAME.match(name):
                raise ValueError(f"variant name {name!r}: use letters, digits and _ . + - only (it names a folder)")
        return variants

    @property
    def baseline_name(self) -> str:
        return self.baseline or next(iter(self.variants))

    @property
    def out(self) -> Path:
        """``out_dir`` or ``runs/compare/<name>``: one folder per variant and seed, plus the report."""
        return Path(self.out_dir or Path("runs") / "compare" / self.name)


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the comparison: its variant, seed and fully resolved recipe."""

    variant: str
    seed: int
    recipe: Recipe

    @property
    def run_dir(self) -> Path:
        return self.recipe.run_dir


def _spec_error(exc: ValidationError, where: str) -> RecipeError:
    err = exc.errors()[0]
    path = ".".join(str(p) for p in err["loc"]) or "comparison"
    hint = "; accepted: " + ", ".join(ComparisonSpec.model_fields) if err["type"] == "extra_forbidden" else ""
    return RecipeError(f"{where}: {path}: {err['msg'].removeprefix('Value error, ')}{hint}")


def select_variants(spec: ComparisonSpec, names: Sequence[str]) -> ComparisonSpec:
    """The same comparison restricted to ``names`` (plus its baseline): run part of it now, the rest later."""
    unknown = [n for n in names if n not in spec.variants]
    if unknown:
        raise RecipeError(f"--variants: {unknown[0]!r} is not a variant; choose from {', '.join(spec.variants)}")
    keep = [v for v in spec.variants if v in names or v == spec.baseline_name]
    return spec.model_copy(update={"variants": {v: spec.variants[v] for v in keep}, "baseline": spec.baseline_name})


def is_comparison(path: str | Path) -> bool:
    """Whether ``path`` is a comparison YAML (has ``variants:``) rather than a recipe."""
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(raw, dict) and "variants" in raw


def load_spec(path: str | Path, **updates: Any) -> tuple[ComparisonSpec, Path]:
    """Read a comparison YAML; ``updates`` (e.g. ``seeds=[0]``) replace its keys. Returns the spec and its folder."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"comparison {str(path)!r} not found; pass a comparison YAML or recipe files")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or "variants" not in raw:
        raise RecipeError(f"{path}: a comparison YAML needs 'variants:' (name → recipe file or mapping)")
    raw.setdefault("name", path.stem)
    try:
        return ComparisonSpec(**{**raw, **updates}), path.parent
    except ValidationError as exc:
        raise _spec_error(exc, str(path)) from None


def from_configs(configs: Sequence[str | Path], name: str | None = None, **updates: Any) -> ComparisonSpec:
    """A spec comparing recipe files as they are: variant names are the file stems, the first is the baseline."""
    variants: dict[str, str] = {}
    for cfg in configs:
        stem = Path(cfg).stem
        if stem in variants:
            raise RecipeError(f"{cfg}: two configs named {stem!r}; variants are named by file stem, rename one")
        variants[stem] = str(Path(cfg).resolve())
    try:
        return ComparisonSpec(
            name=name or "_vs_".join(variants)[:80],
            variants=variants,
            **updates,
        )
    except ValidationError as exc:
        raise _spec_error(exc, "comparison") from None


def variant_config(spec: ComparisonSpec, variant: str, folder: Path) -> dict[str, Any]:
    """The merged (unvalidated) recipe dict of one variant: a file, or a mapping on top of ``base``."""
    entry = spec.variants[variant]
    if isinstance(entry, str):
        return read_config((folder / entry).resolve())
    if spec.base is None:
        raise RecipeError(f"variants.{variant}: a mapping needs 'base:' (the recipe it modifies); add base: <file>")
    return merge_configs(read_config((folder / spec.base).resolve()), entry)


def plan_runs(spec: ComparisonSpec, folder: str | Path = ".", overrides: Sequence[str] = ()) -> list[PlannedRun]:
    """Every (variant, seed) run with its recipe: seed in ``train.seed``, run folder ``<out>/<variant>/seed<k>``.

    Runs are ordered seed-major (all variants of seed 0 first), so a partial comparison is balanced.
    """
    if spec.baseline_name not in spec.variants:
        raise RecipeError(
            f"baseline: {spec.baseline_name!r} is not a variant; choose one of {', '.join(spec.variants)}"
        )
    folder = Path(folder)
    configs = {}
    for variant in spec.variants:
        cfg = apply_overrides(variant_config(spec, variant, folder), [*spec.overrides, *overrides])
        if "model" not in cfg:
            raise RecipeError(f"variants.{variant}: no 'model' section; give a recipe file or a base")
        configs[variant] = cfg
    tasks = set()
    runs = []
    for seed in spec.seeds:
        for variant, cfg in configs.items():
            run_dir = spec.out / variant / f"seed{seed}"
            cfg = merge_configs(cfg, {"train": {"seed": seed, "run_dir": str(run_dir), "progress_bar": False}})
            cfg.pop("name", None)
            try:
                recipe = build_recipe(cfg, name=f"{spec.name}/{variant}/seed{seed}")
            except RecipeError as exc:
                raise RecipeError(f"variants.{variant}: {exc}") from None
            tasks.add(recipe.task)
            runs.append(PlannedRun(variant, seed, recipe))
    if len(tasks) > 1:
        raise RecipeError("variants mix pose and detection recipes; compare one task at a time")
    return runs
