"""The data side of each task (``models.tasks``): which datasets a task reads, how they batch and are scored.

``CocoDataModule`` looks its task up here by name; a new task registers a ``TaskData`` with ``register_task_data``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch.utils.data import Dataset

from data.coco_detection import CocoDetectionDataset, detection_collate
from data.coco_keypoints import CocoKeypointDataset
from data.config import DataConfig
from data.errors import DataError
from data.evaluator import BoxEvaluator, KeypointEvaluator
from data.heatmap import HeatmapCodec


class TaskData:
    """What ``CocoDataModule`` needs to know about a task's data (subclass and register one per task)."""

    collate: Callable[[list[Any]], Any] | None = None  # None: torch's default collate
    unit = "images"  # what one validation sample is, for the "scored" line

    def datasets(
        self, cfg: DataConfig, paths: dict[str, str], input_size: tuple[int, int], codec: HeatmapCodec, train: bool,
        targets: tuple[str, ...],
    ) -> tuple[Dataset | None, Dataset]:  # fmt: skip
        """The train set (``None`` unless ``train``) and the val set."""
        raise NotImplementedError

    def image_ids(self, dataset: Any) -> list[int]:
        """The image id of each sample of ``dataset`` (the base dataset, not a subset)."""
        raise NotImplementedError

    def evaluator(self, dataset: Any, codec: HeatmapCodec, ids: Sequence[int] | None, oks_nms: float | None,
                  visible_thr: float) -> Any:  # fmt: skip
        """The COCO evaluator of ``dataset``'s predictions, restricted to ``ids`` (None: every image)."""
        raise NotImplementedError


class PoseData(TaskData):
    """Top-down person crops (GT boxes, or a detection file at evaluation), with the head's targets."""

    unit = "instances"

    def datasets(self, cfg, paths, input_size, codec, train, targets):  # noqa: ANN001, ANN201 - as TaskData
        augment = None if cfg.augment is False else (cfg.augment if isinstance(cfg.augment, dict) else {})
        common = {"missing_images": cfg.missing_images, "cache_images": cfg.cache_images, "targets": targets}
        place = cfg.placement.placement if cfg.placement is not None else lambda split: None
        train_set = None
        if train:
            train_set = CocoKeypointDataset(
                paths["train_ann"], paths["train_images"], input_size, codec, augment=augment,
                placement=place("train"), **common,
            )  # fmt: skip
        val = CocoKeypointDataset(
            paths["val_ann"], paths["val_images"], input_size, codec, det_file=paths.get("det_file"),
            det_score_thr=cfg.det_score_thr, placement=place("val"), **common,
        )  # fmt: skip
        return train_set, val

    def image_ids(self, dataset):  # noqa: ANN001, ANN201 - as TaskData
        return [inst.image_id for inst in dataset.instances]

    def evaluator(self, dataset, codec, ids, oks_nms, visible_thr):  # noqa: ANN001, ANN201 - as TaskData
        meta = dataset.meta
        return KeypointEvaluator(dataset.coco, meta.sigmas, codec, ids, oks_nms, visible_thr, meta.category_id)


class DetectionData(TaskData):
    """Whole images with their boxes (person, or every category of an ``instances_*`` file)."""

    collate = staticmethod(detection_collate)

    def datasets(self, cfg, paths, input_size, codec, train, targets):  # noqa: ANN001, ANN201 - as TaskData
        if cfg.placement is not None:
            raise DataError("data.placement moves the person in a pose crop; remove it from a detection recipe")
        augment = None if cfg.augment is False else (cfg.augment if isinstance(cfg.augment, dict) else {})
        train_set = None
        if train:
            train_set = CocoDetectionDataset(
                paths["train_ann"], paths["train_images"], train=True, augment=augment,
                missing_images=cfg.missing_images,
            )  # fmt: skip
        val = CocoDetectionDataset(
            paths["val_ann"], paths["val_images"], train=False, missing_images=cfg.missing_images
        )
        return train_set, val

    def image_ids(self, dataset):  # noqa: ANN001, ANN201 - as TaskData
        return [item[0] for item in dataset.items]

    def evaluator(self, dataset, codec, ids, oks_nms, visible_thr):  # noqa: ANN001, ANN201 - as TaskData
        return BoxEvaluator(dataset.coco, dataset.label_to_category, ids)


TASK_DATA: dict[str, TaskData] = {"pose": PoseData(), "detection": DetectionData()}


def register_task_data(name: str, task_data: TaskData) -> None:
    """Register the data side of task ``name`` (the name of its ``models.tasks.Task``)."""
    TASK_DATA[name] = task_data


def get_task_data(name: str) -> TaskData:
    """The data side of task ``name``, or a one-line ``DataError``."""
    if name not in TASK_DATA:
        raise DataError(f"task {name!r} has no data side; known: {', '.join(TASK_DATA)} (see data/task_data.py)")
    return TASK_DATA[name]
