"""The ``data:`` section of a recipe: which COCO-format files to read, how to crop, augment and batch them.

``dataset: synthetic`` (the default) generates the built-in synthetic set; ``dataset: coco`` reads
``root/annotations/person_keypoints_{train,val}2017.json`` and ``root/{train,val}2017/`` for both tasks
(person keypoints; person detection). Any of the four paths can also be given one by one (``train_ann``
...), e.g. ``instances_*2017.json`` for 80-class detection with ``model.num_classes: 80``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from data.errors import DataError
from data.synthetic_presets import SYNTH_PRESETS

if TYPE_CHECKING:
    from data.placement import Placement
    from data.synthetic import SynthConfig

log = logging.getLogger(__name__)


class Strict(BaseModel):
    """Unknown keys are errors (a typo must never be ignored)."""

    model_config = ConfigDict(extra="forbid")


class SyntheticOptions(Strict):
    """Parameters of the built-in synthetic set (see ``data.synthetic.SynthConfig``); ``preset`` fills the
    difficulty keys not given (``data.synthetic_presets.SYNTH_PRESETS``)."""

    preset: Literal["standard", "easy"] = "standard"
    seed: int = 0
    train_images: int = Field(1200, ge=1)
    val_images: int = Field(120, ge=1)
    width: int = Field(256, ge=32)
    height: int = Field(256, ge=32)
    max_people: int = Field(4, ge=1)
    min_person_frac: float = Field(0.3, gt=0)
    max_person_frac: float = Field(1.0, gt=0)
    side_shade: float = Field(0.0, ge=0, lt=1)
    min_clutter: int = Field(6, ge=0)
    max_clutter: int = Field(20, ge=1)
    tilt_deg: float = Field(0.0, ge=0, le=180)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get("preset") in SYNTH_PRESETS:
            return {**SYNTH_PRESETS[values["preset"]], **values}
        return values

    def synth_config(self) -> SynthConfig:
        """The generator's parameters (the preset resolved)."""
        from data.synthetic import SynthConfig  # numpy, OpenCV: not needed to validate a recipe

        return SynthConfig(**self.model_dump(exclude={"preset"}))


class HeatmapOptions(Strict):
    """Heatmap targets: stride to the input crop, Gaussian sigma, sub-pixel decoding."""

    stride: int = Field(4, ge=1)
    sigma: float = Field(2.0, gt=0)
    refine: Literal["none", "quarter", "dark"] = "dark"


class PlacementRange(Strict):
    """Offsets of the person's box centre from the crop centre, fractions of the crop size: U(low, high)."""

    x: tuple[float, float] = (0.0, 0.0)
    y: tuple[float, float] = (0.0, 0.0)


class PlacementOptions(Strict):
    """``data.placement`` (pose): the crop zoomed out ``zoom`` times and the person moved in it, with offsets
    from the ``train`` and ``val`` ranges; different ranges make an unseen-position split."""

    zoom: float = Field(1.0, ge=1.0)
    train: PlacementRange = Field(default_factory=PlacementRange)
    val: PlacementRange = Field(default_factory=PlacementRange)

    @model_validator(mode="after")
    def _valid_ranges(self) -> PlacementOptions:
        self.placement("train"), self.placement("val")
        return self

    def placement(self, split: Literal["train", "val"]) -> Placement:
        """The dataset's ``Placement`` for ``split``."""
        from data.placement import Placement  # numpy: not needed to validate a recipe

        where = self.train if split == "train" else self.val
        try:
            return Placement(self.zoom, where.x, where.y)
        except ValueError as exc:
            raise ValueError(f"{split}.{exc}") from None


class DataConfig(Strict):
    """Data files, crops, augmentation and loaders for one task."""

    dataset: str = "synthetic"  # a name in ``DATASETS``
    root: str | None = None
    train_ann: str | None = None
    train_images: str | None = None
    val_ann: str | None = None
    val_images: str | None = None
    synthetic: SyntheticOptions = Field(default_factory=SyntheticOptions)
    heatmap: HeatmapOptions = Field(default_factory=HeatmapOptions)
    augment: dict[str, Any] | bool = True
    placement: PlacementOptions | None = None
    det_file: str | None = None
    det_score_thr: float = Field(0.0, ge=0.0, le=1.0)
    missing_images: Literal["error", "skip"] = "error"
    batch_size: int = Field(32, ge=1)
    val_batch_size: int | None = Field(None, ge=1)
    num_workers: int = Field(2, ge=0)
    train_limit: int | None = Field(None, ge=1)
    train_repeat: int = Field(1, ge=1)
    cache_images: bool = False  # decode every image once, up front (pose; small data sets such as the synthetic one)
    val_limit: int | None = Field(None, ge=1)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in DATASETS:
            raise ValueError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}")
        return name

    @model_validator(mode="after")
    def _files_need_paths(self) -> DataConfig:
        if DATASETS[self.dataset].needs_root and self.root is None:
            given = [self.train_ann, self.train_images, self.val_ann, self.val_images]
            if not all(given):
                raise ValueError(
                    f"dataset '{self.dataset}' needs data.root=/path/to/{self.dataset} (or all of train_ann, "
                    "train_images, val_ann, val_images)"
                )
        return self


def _check(path: Path, key: str, what: str) -> str:
    exists = path.is_dir() if what == "folder" else path.is_file()
    if not exists:
        raise DataError(f"data.{key}: {what} {str(path)!r} does not exist; fix the path or set data.root")
    return str(path)


@dataclass(frozen=True)
class DatasetKind:
    """A value of ``data.dataset``: the default paths of its four files (``train_ann`` ...), and whether they
    live under ``data.root`` (so that a recipe must give it, or all four paths)."""

    default_paths: Callable[[DataConfig], dict[str, str | Path]]
    needs_root: bool


def synthetic_paths(cfg: DataConfig) -> dict[str, str | Path]:
    """The built-in synthetic set's files, generated (and cached) the first time."""
    from data.synthetic import SynthPaths, default_cache_dir, ensure_synthetic  # numpy, OpenCV

    synth_cfg = cfg.synthetic.synth_config()
    cached = SynthPaths(default_cache_dir() / synth_cfg.key()).manifest.is_file()
    if not cached:
        log.info(
            "generating the synthetic data set (%d train + %d val images) into %s, once; later runs reuse it",
            synth_cfg.train_images, synth_cfg.val_images, default_cache_dir(),
        )  # fmt: skip
    start = time.perf_counter()
    synth = ensure_synthetic(synth_cfg)
    if not cached:
        log.info("synthetic data set ready in %.0f s: %s", time.perf_counter() - start, synth.root)
    return {
        "train_ann": synth.annotations("train"),
        "train_images": synth.images("train"),
        "val_ann": synth.annotations("val"),
        "val_images": synth.images("val"),
    }


def coco_paths(cfg: DataConfig) -> dict[str, str | Path]:
    """COCO 2017's layout under ``data.root`` (person keypoints)."""
    root = Path(cfg.root or ".")
    return {
        "train_ann": root / "annotations" / "person_keypoints_train2017.json",
        "train_images": root / "train2017",
        "val_ann": root / "annotations" / "person_keypoints_val2017.json",
        "val_images": root / "val2017",
    }


DATASETS: dict[str, DatasetKind] = {
    "synthetic": DatasetKind(synthetic_paths, needs_root=False),
    "coco": DatasetKind(coco_paths, needs_root=True),
}


def resolve_paths(cfg: DataConfig, check: bool = True) -> dict[str, str]:
    """``train_ann``, ``train_images``, ``val_ann``, ``val_images`` (and ``det_file`` when set) as paths.

    The dataset kind gives the defaults (``DATASETS``: synthetic data is generated here the first time); paths
    given one by one win; all are checked to exist.
    """
    defaults = DATASETS[cfg.dataset].default_paths(cfg)
    out = {}
    for key, default in defaults.items():
        path = Path(getattr(cfg, key) or default)
        out[key] = _check(path, key, "folder" if key.endswith("images") else "file") if check else str(path)
    if cfg.det_file is not None:
        out["det_file"] = _check(Path(cfg.det_file), "det_file", "file") if check else cfg.det_file
    return out
