"""LightningDataModule for both tasks: datasets and loaders from a ``DataConfig``, and the matching evaluator.

Training order is a function of ``(seed, epoch)`` only (``EpochShuffle``), so a resumed run sees the same
batches as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from data.coco_io import describe_skipped
from data.config import DataConfig, resolve_paths
from data.evaluator import BoxEvaluator, KeypointEvaluator
from data.heatmap import HeatmapCodec
from data.targets import check_targets
from data.task_data import get_task_data


class EpochShuffle(Sampler[int]):
    """A permutation of ``range(n)`` drawn from ``(seed, epoch)``; Lightning calls ``set_epoch`` each epoch.

    It passes the epoch on to ``dataset`` (when it has ``set_epoch``), so augmentations are a function of
    ``(seed, epoch, index)`` too: a resumed run repeats an uninterrupted one exactly.
    """

    def __init__(self, n: int, seed: int = 0, dataset: Any = None) -> None:
        self.n, self.seed, self.epoch, self.dataset = n, seed, 0, dataset
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.seed, epoch)

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())

    def __len__(self) -> int:
        return self.n


class Repeated(Dataset):
    """``dataset`` (or a ``Subset`` of it) ``times`` over in one epoch, each repeat with its own augmentation.

    For small training sets (as mmengine's ``RepeatDataset``): fewer, longer epochs, so per-epoch work
    (checkpoints, loader start-up) does not dominate. Item ``i`` is sample ``i % n`` drawn as ``i``.
    """

    def __init__(self, dataset: Dataset, times: int) -> None:
        self.dataset, self.times = dataset, times
        self.indices = list(dataset.indices) if isinstance(dataset, Subset) else list(range(len(dataset)))
        self.base = base_dataset(dataset)

    def __len__(self) -> int:
        return len(self.indices) * self.times

    def __getitem__(self, index: int) -> Any:
        return self.base.sample(self.indices[index % len(self.indices)], draw=index)


def _first_images(dataset: Dataset, image_ids: list[int], limit: int | None) -> Dataset:
    """The samples of the first ``limit`` images (whole images, so COCOeval sees every person in them)."""
    if limit is None:
        return dataset
    keep = set(sorted(set(image_ids))[:limit])
    return Subset(dataset, [i for i, image_id in enumerate(image_ids) if image_id in keep])


def base_dataset(dataset: Dataset) -> Any:
    """The dataset under any ``Subset`` wrappers."""
    while isinstance(dataset, (Subset, Repeated)):
        dataset = dataset.dataset
    return dataset


class CocoDataModule(L.LightningDataModule):
    """Train/val loaders for a registered ``task`` (``data.task_data``: pose crops, detection images).

    ``targets`` are the training targets the model's head asks for (pose; ``set_targets`` changes them later).
    """

    def __init__(
        self,
        cfg: DataConfig,
        task: str,
        input_size: tuple[int, int] = (256, 192),
        seed: int = 0,
        train: bool = True,
        targets: tuple[str, ...] = ("heatmap",),
    ) -> None:
        super().__init__()
        self.cfg, self.task, self.input_size, self.seed, self.with_train = cfg, task, tuple(input_size), seed, train
        self.task_data = get_task_data(task)
        self.targets = check_targets(targets)
        self.codec = HeatmapCodec(self.input_size, cfg.heatmap.stride, cfg.heatmap.sigma, cfg.heatmap.refine)
        self.paths: dict[str, str] = {}
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def prepare_data(self) -> None:
        """Generates the synthetic set once (rank 0); other ranks find it in the cache."""
        resolve_paths(self.cfg)

    def setup(self, stage: str | None = None) -> None:
        if self.val_set is not None:
            return
        self.paths = resolve_paths(self.cfg)
        train, val = self.task_data.datasets(
            self.cfg, self.paths, self.input_size, self.codec, self.with_train, self.targets
        )
        if train is not None:
            self.train_set = self._train_subset(train)
        self.val_set = _first_images(val, self.task_data.image_ids(val), self.cfg.val_limit)

    def set_targets(self, targets: tuple[str, ...]) -> None:
        """Encode ``targets`` (the head's) in every sample from now on, in sets already built too."""
        self.targets = check_targets(targets)
        for dataset in (self.train_set, self.val_set):
            if dataset is not None and hasattr(base_dataset(dataset), "targets"):
                base_dataset(dataset).targets = self.targets

    def _train_subset(self, train: Dataset) -> Dataset:
        """The first ``train_limit`` samples, repeated ``train_repeat`` times per epoch."""
        limit, times = self.cfg.train_limit, self.cfg.train_repeat
        subset = train if limit is None else Subset(train, range(min(limit, len(train))))
        return subset if times == 1 else Repeated(subset, times)

    @property
    def collate(self) -> Any:
        return self.task_data.collate

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None, "setup('fit') first"
        distributed = self.trainer is not None and self.trainer.world_size > 1
        # Under DDP Lightning's DistributedSampler shuffles by (seed, epoch); augmentations follow torch's RNG.
        sampler = None if distributed else EpochShuffle(len(self.train_set), self.seed, base_dataset(self.train_set))
        return DataLoader(
            self.train_set,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            shuffle=True if distributed else None,
            num_workers=self.cfg.num_workers,
            collate_fn=self.collate,
            drop_last=len(self.train_set) > self.cfg.batch_size,
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_set is not None, "setup() first"
        return DataLoader(
            self.val_set,
            batch_size=self.cfg.val_batch_size or self.cfg.batch_size,
            shuffle=False,
            num_workers=self.cfg.num_workers,
            collate_fn=self.collate,
        )

    def val_image_ids(self) -> list[int]:
        """Image ids of the validation samples (COCOeval is restricted to them)."""
        ds, subset = base_dataset(self.val_set), self.val_set
        ids = self.task_data.image_ids(ds)
        return [ids[i] for i in subset.indices] if isinstance(subset, Subset) else ids

    def skipped_images(self) -> list[str]:
        """One line per data set that left images out, e.g. "val: skipped 2 unreadable images: a.jpg (an empty
        file), ..." (``data.missing_images: skip``); the tools print them when a run or evaluation ends."""
        sets = {"train": self.train_set, "val": self.val_set}
        found = {k: base_dataset(v).skipped_images for k, v in sets.items() if v is not None}
        return [f"{k}: {describe_skipped(v)}" for k, v in found.items() if v]

    def evaluator(self, oks_nms: float | None = 0.9, visible_thr: float = 0.2) -> KeypointEvaluator | BoxEvaluator:
        """The evaluator for the validation set (call after ``setup``)."""
        ids = self.val_image_ids() if self.cfg.val_limit else None  # else every image, even those without boxes
        ds = base_dataset(self.val_set)
        if ids is None and ds.skipped_ids:  # every image that was read: skipped ones are not scored as misses
            ids = sorted(set(ds.coco.getImgIds()) - ds.skipped_ids)
        return self.task_data.evaluator(ds, self.codec, ids, oks_nms, visible_thr)
