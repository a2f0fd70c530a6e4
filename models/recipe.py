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

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from data.config import DataConfig

from .config import BlockConfigError
from .train_config import EvalConfig, TrainConfig

TASKS = {"topdown_pose": "pose", "fcos": "detection", "retinanet": "detection", "faster_rcnn": "detection"}


class RecipeError(BlockConfigError):
    """A recipe problem: the message starts with the file or key path and says how to fix it."""


class Recipe(BaseModel):
    """A validated recipe. ``model`` stays a dict: ``models.build_model`` validates it, naming key paths."""

    model_config = ConfigDict(extra="forbid")

    name: str = "run"
    task: Literal["pose", "detection"] | None = None
    model: dict[str, Any]
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    def model_post_init(self, _context: Any) -> None:
        if self.task is None:
            kind = self.model.get("type")
            if kind not in TASKS:
                raise RecipeError(
                    f"task: cannot tell pose from detection for model.type {kind!r}; set task: pose or task: detection"
                )
            self.task = TASKS[kind]

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
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{path}{at}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: expected a mapping with model/data/train/eval sections")
    bases = raw.pop("_base_", [])
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else bases:
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
        if "=" not in item or item.startswith("="):
            raise RecipeError(f"override {item!r}: expected key.path=value, e.g. train.max_epochs=3")
    try:
        dotted = OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as exc:
        raise RecipeError(f"overrides: {str(exc).splitlines()[0]}; use key.path=value") from None
    return merge_configs(cfg, dotted)


def _fields_at(loc: Sequence[Any]) -> list[str]:
    """Accepted keys at a pydantic error location (for 'did you mean')."""
    cls: Any = Recipe
    for part in loc:
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        cls = field.annotation
    return list(getattr(cls, "model_fields", {}))


def _format(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and p.endswith("]"))]
    path = ".".join(str(p) for p in loc) or "recipe"
    if err["type"] == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
        hint = f"did you mean '{close[0]}'?" if close else f"accepted: {', '.join(allowed)}"
        return f"{path}: unknown key; {hint}"
    if err["type"] == "missing":
        return f"{path}: required; add it to the config"
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{path}: {err['msg'].removeprefix('Value error, ')}{shown}"


def build_recipe(cfg: dict[str, Any], name: str = "run") -> Recipe:
    """Validate a merged config dict into a ``Recipe`` (one-line ``RecipeError`` on the first problem)."""
    try:
        return Recipe(**{"name": name, **cfg})
    except ValidationError as exc:
        raise RecipeError(_format(exc)) from None
    except TypeError as exc:
        raise RecipeError(f"recipe: {exc}") from None


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read ``path`` (following ``_base_``), apply dotted ``overrides`` and validate; name = the file's stem."""
    path = Path(path)
    cfg = apply_overrides(read_config(path.resolve()), overrides)
    if "model" not in cfg:
        raise RecipeError(f"{path}: no 'model' section; add one or a _base_ that has it")
    return build_recipe(cfg, name=cfg.pop("name", path.stem))
