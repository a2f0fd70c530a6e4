"""One way to validate a recipe: model parts are pydantic sections with today's one-line messages, the built
model records its resolved config (every default), tasks and dataset kinds are registries, and the training
loop anneals any block that provides the ``set_temperature`` hook."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch.nn as nn

from convblocks import BlockConfigError
from models import build_model
from models.backbone import BackboneSection
from models.callbacks import DynamicTemperature
from models.recipe import RecipeError, build_recipe
from models.rules import RuleSection
from models.sections import validate_section
from models.tasks import TASKS, Task, register_task
from models.train_config import TemperatureConfig

POSE = {
    "type": "topdown_pose",
    "num_keypoints": 5,
    "input_size": [64, 64],
    "backbone": {"name": "resnet10t", "out_indices": [2, 3]},
    "head": {"type": "simcc", "conv_layers": 1, "conv_channels": 8},
}


def test_model_parts_give_the_builders_messages() -> None:
    with pytest.raises(BlockConfigError, match=r"^model\.backbone: unknown key 'nmae'; did you mean 'name'\?$"):
        validate_section(BackboneSection, {"nmae": "resnet18"}, "model.backbone", BlockConfigError)
    with pytest.raises(BlockConfigError, match=r"^model\.backbone: missing required key 'name'"):
        validate_section(BackboneSection, {"pretrained": True}, "model.backbone", BlockConfigError)
    with pytest.raises(BlockConfigError, match=r"^b\[0\]: unknown selector 'stage'; did you mean 'stages'\?$"):
        validate_section(RuleSection, {"stage": [1], "block": "dcnv2"}, "b[0]", BlockConfigError)
    with pytest.raises(BlockConfigError, match=r"^model\.backbone: expected a mapping \(key: value\), got list$"):
        validate_section(BackboneSection, [1], "model.backbone", BlockConfigError)
    resolved = validate_section(BackboneSection, {"name": "resnet18"}, "model.backbone")
    assert resolved == {
        "name": "resnet18", "out_indices": None, "pretrained": False, "checkpoint": None, "blocks": None, "kwargs": {}
    }  # fmt: skip


def test_the_built_model_records_every_default_and_rebuilds_from_it() -> None:
    config = build_model(POSE).config
    assert config["neck"] is None
    assert config["backbone"] == {**POSE["backbone"], "pretrained": False, "checkpoint": None, "blocks": None,
                                  "kwargs": {}}  # fmt: skip
    assert config["head"] == {**POSE["head"], "split_ratio": 2.0, "conv_kernel": 3, "final_kernel": 1, "blocks": None}
    assert list(config)[:4] == ["type", "num_keypoints", "input_size", "backbone"]  # the recipe's order first
    assert build_model(config).config == config  # resolving is idempotent: config.yaml rebuilds the same model


def test_tasks_are_a_registry() -> None:
    assert {t: TASKS[t].iou_type for t in TASKS} == {"pose": "keypoints", "detection": "bbox"}
    with pytest.raises(RecipeError, match=r"^task: unknown task 'segmentation'; use one of pose, detection$"):
        build_recipe({"model": {"type": "topdown_pose"}, "task": "segmentation"})
    task = Task("segmentation", ("test_segmenter",), "x:y", "segm", ("AP",), crops=False)
    register_task(task)
    try:
        assert build_recipe({"model": {"type": "test_segmenter"}}).task == "segmentation"
    finally:
        TASKS.pop("segmentation")


def test_dataset_kinds_are_a_registry() -> None:
    from data.config import DATASETS, DataConfig, resolve_paths

    assert list(DATASETS) == ["synthetic", "coco"]
    paths = resolve_paths(DataConfig(dataset="coco", root="/d"), check=False)
    assert paths["val_ann"] == "/d/annotations/person_keypoints_val2017.json"
    with pytest.raises(RecipeError, match=r"^data\.dataset: unknown dataset 'imagenet'; use one of synthetic, coco"):
        build_recipe({"model": {"type": "topdown_pose"}, "data": {"dataset": "imagenet"}})


def test_temperature_goes_through_the_blocks_hook() -> None:
    class Annealed(nn.Module):  # any block that provides the hook, not only the dynamic conv
        def __init__(self) -> None:
            super().__init__()
            self.tau = None

        def set_temperature(self, tau: float) -> None:
            self.tau = tau

    model = nn.Sequential(nn.Conv2d(3, 3, 1), Annealed())
    assert DynamicTemperature.applies(model) and not DynamicTemperature.applies(nn.Conv2d(3, 3, 1))
    cb = DynamicTemperature(TemperatureConfig(start=10, end=2, epochs=4))
    module = SimpleNamespace(modules=model.modules, log=lambda *a, **k: None)
    cb.on_train_batch_start(SimpleNamespace(current_epoch=1, num_training_batches=2), module, None, 1)
    assert model[1].tau == pytest.approx(10 + (2 - 10) * 1.5 / 4)
