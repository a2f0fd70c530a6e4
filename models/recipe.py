"""Recipes: one YAML with ``model``, ``data``, ``train`` and ``eval`` sections, ``_base_`` inheritance and
dotted command-line overrides (``train.max_epochs=3 model.backbone.name=resnet18``).

A variant is a few lines on top of a base recipe::

    _base_: pose_baseline.yaml      # path relative to this file (or a list: later ones win)
    model:
      head: {blocks: [{name: final, block: coordconv}]}

Mappings merge key by key; lists and scalars replace. ``_delete_: true`` inside a mapping replaces the
base's mapping instead of merging into it. Every problem is a ``RecipeError`` naming the key path.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from data.config import DataConfig

from .sections import one_line
from .tasks import TASKS, task_of_model
from .train_config import EvalConfig, TrainConfig

_NAME_PART = re.compile(r"^[A-Za-z0-9_.+\-]+$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class RecipeError(ValueError):
    """A recipe problem: the message starts with the file or key path and says how to fix it.

    Defined without torch (not a ``BlockConfigError``) so that recipes validate before the heavy imports.
    """


def check_run_name(name: str, key: str = "name") -> str:
    """``name`` if it can name a folder under ``runs/`` (``/``-separated parts, no ``..``), else ``RecipeError``."""
    parts = name.split("/") if isinstance(name, str) else [""]
    if not all(_NAME_PART.match(p) and p not in (".", "..") for p in parts):
        raise RecipeError(
            f"{key}: {name!r} cannot name a run folder under runs/; use letters, digits and _ . + - "
            "(e.g. name=my_run), or train.run_dir=/absolute/path for a folder elsewhere"
        )
    return name


def check_run_dir(run_dir: str, key: str = "train.run_dir") -> str:
    """``run_dir`` if it is absolute (given on purpose) or a relative path without ``..`` parts."""
    path = Path(run_dir)
    if not run_dir.strip() or (not path.is_absolute() and ".." in path.parts):
        raise RecipeError(
            f"{key}: {run_dir!r} leaves the project folder; give a relative path without '..' (e.g. runs/my_run) "
            "or an absolute path"
        )
    return run_dir


class Recipe(BaseModel):
    """A validated recipe. ``model`` stays a dict: ``models.build_model`` validates it, naming key paths."""

    model_config = ConfigDict(extra="forbid")

    name: str = "run"
    task: str | None = None  # a registered task (``models.tasks``); default: the one of ``model.type``
    model: dict[str, Any]
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        return check_run_name(name)

    @field_validator("task")
    @classmethod
    def _task(cls, task: str | None) -> str | None:
        if task is not None and task not in TASKS:
            raise RecipeError(f"task: unknown task {task!r}; use one of {', '.join(TASKS)}")
        return task

    @model_validator(mode="after")
    def _task_and_sizes(self) -> Recipe:
        if self.task is None:
            kind = self.model.get("type")
            known = " or ".join(f"task: {t}" for t in TASKS)
            if not isinstance(kind, str) or task_of_model(kind) is None and ":" not in kind:
                raise RecipeError(f"task: cannot tell the task for model.type {kind!r}; set {known}")
            if task_of_model(kind) is None:
                raise RecipeError(f"task: model.type {kind!r} is an import path; set {known}")
            self.task = task_of_model(kind)
        if TASKS[self.task].crops and "input_size" in self.model:
            size = self.model["input_size"]
            ok = isinstance(size, list) and len(size) == 2 and all(type(v) is int and v >= 32 for v in size)
            if not ok:
                raise RecipeError(f"model.input_size: expected [height, width], two ints >= 32, got {size!r}")
        if self.train.run_dir is not None:
            check_run_dir(self.train.run_dir)
        return self

    @property
    def run_dir(self) -> Path:
        """Where checkpoints, logs and the resolved config go: ``train.run_dir`` or ``runs/<name>``."""
        return Path(self.train.run_dir or Path("runs") / self.name)

    def to_yaml(self) -> str:
        """The fully resolved recipe (defaults filled in): what a run directory keeps as ``config.yaml``."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def read_config(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe file with its ``_base_`` chain merged in (not validated)."""
    if path in chain:
        raise RecipeError(f"{path}: _base_ cycle ({' -> '.join(p.name for p in (*chain, path))}); remove one _base_")
    if not path.is_file():
        where = f"{chain[-1]}: _base_" if chain else "config"
        raise RecipeError(f"{where}: file {str(path)!r} not found; check the path (bases are relative to the file)")
    try:
        raw = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text (byte {exc.start}); save the recipe as UTF-8 YAML") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read ({exc.strerror}); check the file's permissions") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{path}{at}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: expected a mapping with model/data/train/eval sections")
    bases = raw.pop("_base_", [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise RecipeError(
            f"{path}: _base_: expected a file name or a list of file names, got {raw.get('_base_', bases)!r}; "
            "e.g. _base_: pose_baseline.yaml"
        )
    merged: dict[str, Any] = {}
    for base in bases:
        merged = merge_configs(merged, read_config((path.parent / base).resolve(), (*chain, path)))
    return merge_configs(merged, raw)


def merge_configs(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings key by key (unless ``_delete_: true``), everything else replaced."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and value.get("_delete_"):
            out[key] = {k: v for k, v in value.items() if k != "_delete_"}
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_configs(out[key], value)
        else:
            out[key] = value
    return out


def apply_overrides(cfg: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """``key.path=value`` strings (YAML values: ``3``, ``[1, 2]``, ``null``, ``{a: 1}``) merged into ``cfg``."""
    for item in overrides:
        key = item.partition("=")[0].strip()
        if "=" not in item or not _KEY.match(key):
            raise RecipeError(f"override {item!r}: expected key.path=value, e.g. train.max_epochs=3")
        try:  # OmegaConf's YAML: 1e-3 is a float, as users expect
            dotted = OmegaConf.to_container(OmegaConf.from_dotlist([item]))
        except Exception as exc:  # noqa: BLE001 - YAML and OmegaConf errors alike: the value does not parse
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RecipeError(
                f"{key}: override value {item.partition('=')[2]!r} is not valid YAML ({reason}); "
                f"quote it or close its brackets, e.g. {key}='[256, 192]'"
            ) from None
        cfg = merge_configs(cfg, dotted)
    return cfg


def build_recipe(cfg: dict[str, Any], name: str = "run") -> Recipe:
    """Validate a merged config dict into a ``Recipe`` (one-line ``RecipeError`` on the first problem)."""
    try:
        return Recipe(**{"name": name, **cfg})
    except ValidationError as exc:
        raise RecipeError(one_line(exc, Recipe)) from None
    except TypeError as exc:
        raise RecipeError(f"recipe: {exc}") from None


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read ``path`` (following ``_base_``), apply dotted ``overrides`` and validate; name = the file's stem."""
    path = Path(path)
    cfg = apply_overrides(read_config(path.resolve()), overrides)
    if "model" not in cfg:
        raise RecipeError(f"{path}: no 'model' section; add one or a _base_ that has it")
    return build_recipe(cfg, name=cfg.pop("name", path.stem))
