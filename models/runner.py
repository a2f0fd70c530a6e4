"""Recipe → datamodule + LightningModule + Trainer: ``train`` and ``evaluate``, the library side of the tools.

A run directory (``train.run_dir`` or ``runs/<name>``) holds ``config.yaml`` (the resolved recipe),
``checkpoints/last.ckpt`` (every epoch), ``checkpoints/best.ckpt`` (by val AP), ``logs/`` (CSV; a resume
logs to ``logs/resume<k>/``, see ``models.run_logs``) and
``tb/`` (TensorBoard), and ``summary.json`` at the end.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from convblocks import BlockConfigError
from data.datamodule import CocoDataModule, base_dataset

from .callbacks import (
    DynamicTemperature,
    EpochLine,
    LastCheckpoint,
    QuietWorkerExit,
    ReseedEachEpoch,
    Throughput,
    ValidateLastEpoch,
)
from .checkpoint import check_resume, read_checkpoint
from .lit_base import EvaluatedModule
from .quiet import silence_noise
from .recipe import Recipe, RecipeError, build_recipe
from .registry import build_model
from .run_logs import csv_log_version
from .tasks import get_task
from .train_config import TrainConfig

silence_noise()


@dataclass
class RunResult:
    """What ``train``/``evaluate`` report: stats (``AP``, ...), checkpoints, timings, the run directory."""

    run_dir: str
    metrics: dict[str, float] = field(default_factory=dict)
    best_epoch: int | None = None
    best_checkpoint: str | None = None
    last_checkpoint: str | None = None
    seconds: float = 0.0
    train_images_per_s: float | None = None
    results_file: str | None = None
    n_results: int | None = None
    is_global_zero: bool = True
    scored: str = ""  # which val set evaluate() scored, e.g. "val2017: 5000 images, 6352 instances"
    history: list[dict[str, float]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "val: skipped 2 unreadable images: ..." (missing_images: skip)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_datamodule(recipe: Recipe, train: bool = True) -> CocoDataModule:
    """The data for ``recipe`` (crops of a task with crops use ``model.input_size``)."""
    crops = get_task(recipe.task).crops
    size = tuple(recipe.model.get("input_size", (256, 192))) if crops else (256, 192)
    return CocoDataModule(recipe.data, recipe.task, size, recipe.train.seed, train=train)


def describe_val_set(dm: CocoDataModule, recipe: Recipe) -> str:
    """Which images and how many instances a validation scores, saying so when ``data.val_limit`` cut it."""
    images = len(set(dm.val_image_ids()))
    total = len(base_dataset(dm.val_set).coco.getImgIds())
    kind = "detections" if recipe.data.det_file and dm.task_data.unit == "instances" else dm.task_data.unit
    line = f"{Path(dm.paths['val_ann']).name}: {images} images, {len(dm.val_set)} {kind}"
    if recipe.data.val_limit is not None and images < total:
        line += f" (a subset: data.val_limit={recipe.data.val_limit} of {total} images)"
    skipped = len(base_dataset(dm.val_set).skipped_ids)
    if skipped:
        line += f" ({skipped} unreadable image{'s' if skipped > 1 else ''} skipped, not scored)"
    return line


def build_module(
    recipe: Recipe, datamodule: CocoDataModule | None = None, model: torch.nn.Module | None = None
) -> EvaluatedModule:
    """Model from ``recipe.model`` (unless given) wrapped in its task's LightningModule (``models.tasks``); with a
    set-up ``datamodule``, its evaluator, and the datamodule encodes the targets the model asks for."""
    if model is None:
        model = build_model(recipe.model)
    if recipe.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    module = get_task(recipe.task).build_module(recipe, model, datamodule)
    module.recipe = resolved_recipe(recipe, model).model_dump(mode="json")
    return module


def resolve_model(recipe: Recipe) -> Recipe:
    """``recipe`` with its model section resolved, from the model built on the meta device (no memory, no
    weights, no random draws): model errors surface here, before any data is read."""
    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # e.g. a checkpoint copied into meta parameters is a no-op
            model = build_model(recipe.model)
    except BlockConfigError:
        raise
    except Exception:  # noqa: BLE001 - something not built on the meta device: build it for real
        model = build_model(recipe.model)
    return resolved_recipe(recipe, model)


def resolved_recipe(recipe: Recipe, model: torch.nn.Module) -> Recipe:
    """``recipe`` with the model section as ``build_model`` resolved it (every default filled in)."""
    config = getattr(model, "config", None)
    return recipe.model_copy(update={"model": config}) if isinstance(config, dict) else recipe


def load_weights(module: EvaluatedModule, checkpoint: str | Path, ckpt: dict[str, Any] | None = None) -> None:
    """Load a Lightning checkpoint's weights (``ckpt``: its contents, if read already), with a one-line error if
    they belong to another model."""
    state = (read_checkpoint(checkpoint) if ckpt is None else ckpt).get("state_dict", {})
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        bad = (result.missing_keys or result.unexpected_keys)[0]
        raise RecipeError(
            f"checkpoint {str(checkpoint)!r} does not match the model in the config ({len(result.missing_keys)} "
            f"missing, {len(result.unexpected_keys)} unexpected keys, e.g. {bad!r}); use the config it was "
            "trained with (its run directory keeps config.yaml)"
        )


def _resume_path(recipe: Recipe) -> str | None:
    last = recipe.run_dir / "checkpoints" / "last.ckpt"
    if recipe.train.resume is False:
        if last.exists():
            raise RecipeError(
                f"{recipe.run_dir} already holds a run ({last.name}); pass --resume to continue it, or "
                "name=<new name> / train.run_dir=<dir> to start a new one"
            )
        return None
    path = last if recipe.train.resume is True else Path(recipe.train.resume)
    if not path.is_file():
        raise RecipeError(f"train.resume: {str(path)!r} not found; train without --resume first")
    check_resume(path, recipe)
    return str(path)


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: ``bf16-mixed`` where the hardware computes bf16 natively (a CUDA GPU with bf16, or a CPU whose
    oneDNN has bf16 instructions: AVX512-BF16 or AMX), else ``32-true``; other values are returned unchanged."""
    if precision != "auto":
        return precision
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    if accelerator in ("auto", "cpu"):
        native = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
        return "bf16-mixed" if native() else "32-true"
    return "32-true"


def check_accelerator(cfg: TrainConfig) -> None:
    """``train.accelerator``/``devices`` against this machine, before any data or model is built."""
    wanted = {"gpu": "cuda", "cuda": "cuda", "mps": "mps"}.get(cfg.accelerator)
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RecipeError(
            f"train.accelerator: {cfg.accelerator!r} but this machine has no CUDA GPU; use train.accelerator=auto "
            "(runs on the CPU here) or cpu"
        )
    if wanted == "mps" and not torch.backends.mps.is_available():
        raise RecipeError("train.accelerator: 'mps' but this machine has no Apple GPU; use train.accelerator=auto")
    count = torch.cuda.device_count() if wanted == "cuda" else None
    if count is not None and isinstance(cfg.devices, int) and cfg.devices > count:
        raise RecipeError(f"train.devices: {cfg.devices} GPUs asked for, {count} visible; use train.devices={count}")


def _check_writable(run_dir: Path) -> None:
    """A run directory that cannot be written is an error now, not at the first checkpoint."""
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = run_dir / "checkpoints" / ".write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RecipeError(
            f"train.run_dir: cannot write to {str(run_dir)!r} ({exc.strerror}); choose a writable folder with "
            "train.run_dir=..."
        ) from None


def build_trainer(
    recipe: Recipe, callbacks: Sequence[L.Callback] = (), loggers: bool = True, resuming: bool = False
) -> L.Trainer:
    """A Lightning ``Trainer`` from ``recipe.train`` (devices, strategy, precision, schedule length ...)."""
    t = recipe.train
    check_accelerator(t)
    try:
        return _trainer(recipe, callbacks, loggers, resuming)
    except (MisconfigurationException, ValueError, RuntimeError) as exc:  # Lightning's checks of the same options
        raise RecipeError(
            f"train: {str(exc).strip().splitlines()[0]}; check train.accelerator, devices, strategy and precision"
        ) from None


def _trainer(recipe: Recipe, callbacks: Sequence[L.Callback], loggers: bool, resuming: bool) -> L.Trainer:
    t = recipe.train
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=resolve_precision(t.precision, t.accelerator),
        max_epochs=t.max_epochs,
        check_val_every_n_epoch=t.val_every,
        limit_train_batches=t.limit_train_batches,
        gradient_clip_val=t.gradient_clip,
        log_every_n_steps=t.log_every_n_steps,
        num_sanity_val_steps=0,
        default_root_dir=str(recipe.run_dir),
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        callbacks=list(callbacks),
        logger=[
            CSVLogger(str(recipe.run_dir), name="logs", version=csv_log_version(recipe.run_dir, resuming)),
            TensorBoardLogger(str(recipe.run_dir), name="tb", version="", default_hp_metric=False),
        ]
        if loggers
        else False,
    )


def train(
    recipe: Recipe, extra_callbacks: Sequence[L.Callback] = (), results_file: str | Path | None = None
) -> RunResult:
    """Fit ``recipe`` (resuming when ``train.resume``); best checkpoint by val AP; returns the best stats.

    ``history`` holds the stats of every validation (the last one is the final epoch's); with
    ``results_file`` each validation also writes its COCO results JSON there (the last one stays).
    """
    if recipe.train.torch_threads:
        torch.set_num_threads(recipe.train.torch_threads)
    check_accelerator(recipe.train)
    recipe = resolve_model(recipe)  # every model default filled in: resume, config.yaml and the checkpoint see it
    resume = _resume_path(recipe)
    _check_writable(recipe.run_dir)
    L.seed_everything(recipe.train.seed, workers=True, verbose=False)
    dm = build_datamodule(recipe)
    dm.setup("fit")
    module = build_module(recipe, dm)
    module.results_file = None if results_file is None else str(results_file)
    ckpt_dir = recipe.run_dir / "checkpoints"
    last = LastCheckpoint(ckpt_dir, recipe.train.checkpoint_every_n_steps)
    best = ModelCheckpoint(
        ckpt_dir, filename="best", monitor="val/AP", mode="max", save_top_k=1, every_n_epochs=1,
        enable_version_counter=False,
    )  # fmt: skip
    throughput = Throughput()
    callbacks = [last, best, throughput, ReseedEachEpoch(recipe.train.seed), ValidateLastEpoch(), QuietWorkerExit()]
    callbacks.append(LearningRateMonitor("step"))
    if not recipe.train.progress_bar:
        callbacks.append(EpochLine())
    if DynamicTemperature.applies(module):
        callbacks.append(DynamicTemperature(recipe.train.temperature))
    trainer = build_trainer(recipe, [*callbacks, *extra_callbacks], resuming=resume is not None)
    if trainer.is_global_zero:
        recipe.run_dir.mkdir(parents=True, exist_ok=True)
        (recipe.run_dir / "config.yaml").write_text(recipe.to_yaml())
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=resume, weights_only=True)
    # The best checkpoint is the first epoch with the highest val AP, as ModelCheckpoint(mode="max") keeps it.
    stats = dict(max(module.history, key=lambda h: h["AP"], default=module.metrics))
    epoch = stats.pop("epoch", None)
    stats.pop("step", None), stats.pop("train_seconds", None)
    result = RunResult(
        run_dir=str(recipe.run_dir),
        metrics=stats,
        best_epoch=None if epoch is None else int(epoch),
        best_checkpoint=best.best_model_path or None,
        last_checkpoint=str(ckpt_dir / "last.ckpt"),
        seconds=round(time.perf_counter() - start, 1),
        train_images_per_s=throughput.images_per_s,
        is_global_zero=trainer.is_global_zero,
        history=[dict(h) for h in module.history],
        skipped=dm.skipped_images(),
    )
    if trainer.is_global_zero:
        (recipe.run_dir / "summary.json").write_text(json.dumps(result.to_dict(), indent=1))
    return result


def evaluate(
    recipe: Recipe,
    checkpoint: str | Path,
    det_file: str | None = None,
    flip: bool | None = None,
    results_file: str | Path | None = None,
) -> RunResult:
    """COCO evaluation of ``checkpoint`` on the recipe's val set (GT boxes, or ``det_file`` detections)."""
    updates: dict[str, Any] = {}
    if det_file is not None:
        updates["data"] = {**recipe.data.model_dump(), "det_file": det_file}
    if flip is not None:
        updates["eval"] = {**recipe.eval.model_dump(), "flip_test": flip}
    if updates:
        recipe = build_recipe({**recipe.model_dump(exclude={"name"}), **updates}, recipe.name)
    check_accelerator(recipe.train)
    ckpt = read_checkpoint(checkpoint)  # a refused or unreadable checkpoint fails before the data is built
    dm = build_datamodule(recipe, train=False)
    dm.setup("validate")
    module = build_module(recipe, dm)
    load_weights(module, checkpoint, ckpt)
    module.results_file = results_file
    trainer = build_trainer(recipe, loggers=False)
    start = time.perf_counter()
    trainer.validate(module, datamodule=dm, verbose=False)
    return RunResult(
        run_dir=str(recipe.run_dir),
        metrics=dict(module.metrics),
        scored=describe_val_set(dm, recipe),
        best_checkpoint=str(checkpoint),
        seconds=round(time.perf_counter() - start, 1),
        results_file=str(results_file) if results_file else None,
        n_results=len(module.evaluator.last_results) if module.evaluator is not None else None,
        is_global_zero=trainer.is_global_zero,
        skipped=dm.skipped_images(),
    )
