"""The ``train:`` and ``eval:`` sections of a recipe: optimiser, schedule, trainer options, evaluation options."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from data.config import Strict

# Lightning's strategies that this project can run (DeepSpeed and XLA are not installed).
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook", "fsdp", "fsdp_cpu_offload")
_UNUSED = ("_find_unused_parameters_true", "_find_unused_parameters_false")
_DEVICES = re.compile(r"^(auto|-1|[1-9][0-9]*|[0-9]+(,[0-9]*)+)$")  # a count, all (-1), or GPU ids "0,1"


class OptimizerConfig(Strict):
    """``torch.optim`` optimiser; block lr hints (e.g. DCN offsets) become parameter groups."""

    type: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0)


class ScheduleConfig(Strict):
    """Per-epoch lr schedule after a linear per-step warm-up (SimpleBaseline: multistep 90/120, ×0.1)."""

    type: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[int] = Field(default_factory=lambda: [90, 120])
    gamma: float = Field(0.1, gt=0)
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.001, gt=0, le=1)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)


class TemperatureConfig(Strict):
    """Dynamic-conv softmax temperature: linear ``start`` → ``end`` over ``epochs`` (paper: 30 → 1 over 10)."""

    start: float = Field(30.0, gt=0)
    end: float = Field(1.0, gt=0)
    epochs: float = Field(10.0, ge=0)


class TrainConfig(Strict):
    """Trainer options (Lightning), optimiser and schedule, run directory, resume."""

    max_epochs: int = Field(140, ge=1)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    temperature: TemperatureConfig = Field(default_factory=TemperatureConfig)
    seed: int = 0
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | str | list[int] = 1
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    # auto: bf16-mixed where the hardware computes bf16 natively (models.runner.resolve_precision)
    precision: Literal[
        "auto", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "32", "16", "bf16", "64"
    ] = "32-true"
    channels_last: bool = False
    val_every: int = Field(1, ge=1)
    checkpoint_every_n_steps: int | None = Field(None, ge=1)
    limit_train_batches: int | float | None = Field(None, ge=0)
    gradient_clip: float | None = Field(None, gt=0)
    log_every_n_steps: int = Field(20, ge=1)
    torch_threads: int | None = Field(None, ge=1)
    run_dir: str | None = None
    resume: bool | str = False
    progress_bar: bool = True

    @field_validator("devices", mode="before")
    @classmethod
    def _devices(cls, value: Any) -> Any:
        ok = (
            (type(value) is int and (value >= 1 or value == -1))
            or (isinstance(value, str) and _DEVICES.match(value.strip()))
            or (isinstance(value, list) and value and all(type(v) is int and v >= 0 for v in value))
        )
        if not ok:
            raise ValueError(
                f"train.devices: {value!r} is not a device count; use a count >= 1, -1 (all), auto, or GPU ids "
                "such as [0, 1]"
            )
        return value

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        base = next((value.removesuffix(s) for s in _UNUSED if value.endswith(s)), value)
        if base not in STRATEGIES or (base != value and not base.startswith("ddp")):
            raise ValueError(f"train.strategy: unknown strategy {value!r}; use one of {', '.join(STRATEGIES)}")
        return value

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, value: Any) -> Any:
        return str(value) if type(value) is int else value  # precision: 16 in YAML means "16"

    @field_validator("limit_train_batches")
    @classmethod
    def _fraction(cls, value: int | float | None) -> int | float | None:
        if isinstance(value, float) and value > 1:
            raise ValueError("train.limit_train_batches: a fraction must be <= 1 (or give a number of batches, an int)")
        return value

    @model_validator(mode="after")
    def _milestones_sorted(self) -> TrainConfig:
        if self.schedule.milestones != sorted(self.schedule.milestones):
            raise ValueError("schedule.milestones must be increasing, e.g. [90, 120]")
        return self


class EvalConfig(Strict):
    """Evaluation options (pose): flip test, OKS-NMS threshold (null: off), keypoint-score threshold."""

    flip_test: bool = True
    oks_nms: float | None = Field(0.9, gt=0, le=1)
    visible_thr: float = Field(0.2, ge=0, le=1)
    batch_size: int | None = Field(None, ge=1)
