"""The task registry: what a recipe's ``task`` (pose, detection) means, looked up by name instead of if-chains.

A ``Task`` names, as import paths so that reading a recipe needs no torch, the function that wraps a built model
in its LightningModule, the data side's task (``data.task_data``), and what its results are (COCOeval's
``iou_type`` and the stats a comparison reports). A new task is one ``register_task(Task(...))``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Task:
    """One task: its model types, LightningModule builder, data side and how its results are scored."""

    name: str
    model_types: tuple[str, ...]  # model.type values that imply this task (a recipe may then omit ``task``)
    module_builder: str  # "pkg.mod:function": f(recipe, model, datamodule | None) -> LightningModule
    iou_type: str  # COCOeval's iouType of the results: "keypoints" or "bbox"
    stats: tuple[str, ...]  # the COCO stats a comparison table reports
    crops: bool  # samples are crops at ``model.input_size`` (top-down pose), not whole images

    def build_module(self, recipe: Any, model: Any, datamodule: Any = None) -> Any:
        """The LightningModule for ``model`` (imports the builder, and torch, on first use)."""
        module_name, _, attr = self.module_builder.partition(":")
        builder: Callable[..., Any] = getattr(importlib.import_module(module_name), attr)
        return builder(recipe, model, datamodule)


TASKS: dict[str, Task] = {}


def register_task(task: Task, *, force: bool = False) -> Task:
    """Add ``task`` to the registry (``force`` replaces one of the same name)."""
    if task.name in TASKS and TASKS[task.name] != task and not force:
        raise ValueError(f"task '{task.name}' is already registered; pick another name or pass force=True")
    TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task ``name`` (``KeyError`` with the known names otherwise)."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def task_of_model(model_type: str) -> str | None:
    """The task whose models include ``model_type``, or None."""
    return next((t.name for t in TASKS.values() if model_type in t.model_types), None)


register_task(
    Task(
        name="pose",
        model_types=("topdown_pose",),
        module_builder="models.pose_module:build_pose_module",
        iou_type="keypoints",
        stats=("AP", "AP50", "AP75", "APm", "APl", "AR"),
        crops=True,
    )
)
register_task(
    Task(
        name="detection",
        model_types=("fcos", "retinanet", "faster_rcnn"),
        module_builder="models.detection_module:build_detection_module",
        iou_type="bbox",
        stats=("AP", "AP50", "AP75", "APs", "APm", "APl", "AR"),
        crops=False,
    )
)
