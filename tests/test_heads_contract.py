"""Heads own their training contract: a head registered in this file trains with its own loss and target
(encoded by the data side because the head asks for it); a head that lacks part of the contract fails when
the training module is built, in one line naming what it lacks."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn as nn
from helpers import ROOT, TINY

from convblocks import BlockConfigError
from data.targets import TARGETS, register_target
from models import HEADS, register_head
from models.pose_module import PoseModule
from models.recipe import load_recipe
from models.runner import build_datamodule, build_module, train

BASE = ROOT / "configs/pose_baseline.yaml"


@register_target("test_unit_xy")
def unit_xy(codec, keypoints: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Keypoints ``(K, 2)`` divided by the crop's (W, H): the target of ``UnitXYHead``."""
    h, w = codec.input_size
    return (keypoints / np.array([w, h], dtype=np.float32)).astype(np.float32)


@register_head("test_unit_xy")
class UnitXYHead(nn.Module):
    """Pooled features → ``(N, K, 2)`` keypoints in [0, 1] crop units; a smooth-L1 loss on its own target."""

    targets = ("test_unit_xy",)

    def __init__(self, in_channels: int, num_keypoints: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_keypoints * 2)
        self.k, self.input_size, self.loss_calls = num_keypoints, input_size, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3))).view(x.shape[0], self.k, 2)

    def loss(self, out: torch.Tensor, batch: dict) -> torch.Tensor:
        self.loss_calls += 1
        err = nn.functional.smooth_l1_loss(out, batch["test_unit_xy"], reduction="none").sum(-1)
        return (err * batch["target_weight"]).mean()

    def predict(self, out, flipped=None, flip_index=None, codec=None):
        h, w = self.input_size
        return out * out.new_tensor([w, h]), torch.ones(out.shape[:2])


@register_head("test_forward_only")
class ForwardOnlyHead(nn.Module):
    """A head that never declared its contract (forward only)."""

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_keypoints * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))


@register_head("test_unknown_target")
class UnknownTargetHead(UnitXYHead):
    targets = ("offsets",)


@pytest.fixture(scope="module", autouse=True)
def _unregister():
    yield
    for name in ("test_unit_xy", "test_forward_only", "test_unknown_target"):
        HEADS._entries.pop(name)
    TARGETS.pop("test_unit_xy")


def recipe(head: str, *extra: str):
    return load_recipe(BASE, [*TINY, f"model.head={{_delete_: true, type: {head}}}", *extra])


def test_a_user_head_trains_with_its_own_loss_and_target(tmp_path: Path) -> None:
    r = recipe("test_unit_xy", "data.train_repeat=2", f"train.run_dir={tmp_path / 'run'}")
    dm = build_datamodule(r)
    dm.setup("fit")
    module = build_module(r, dm)
    sample = dm.train_set[0]
    assert "test_unit_xy" in sample and "heatmap" not in sample  # the data encodes what the head asks for
    torch.testing.assert_close(sample["test_unit_xy"] * torch.tensor([64.0, 64.0]), sample["keypoints"][:, :2])
    batch = next(iter(dm.train_dataloader()))
    head = module.model.head
    assert module.training_loss(batch) == head.loss(module(batch["image"]), batch)  # the module defers to it

    before = head.fc.weight.detach().clone()
    calls = Calls()
    result = train(r, extra_callbacks=[calls])  # a few optimizer steps and a validation
    trained = torch.load(result.last_checkpoint, weights_only=True)["state_dict"]
    assert calls.seen and all(n == i + 1 for i, n in enumerate(calls.seen))  # each step called the head's loss
    assert not torch.equal(trained["model.head.fc.weight"], before)  # and its gradients trained the head
    assert "AP" in result.metrics and result.history[-1]["step"] == len(calls.seen) >= 2


class Calls(L.Callback):
    """Records the head's loss-call count after each training batch."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.seen.append(pl_module.model.head.loss_calls)


def test_a_head_without_the_contract_fails_at_build_in_one_line() -> None:
    with pytest.raises(BlockConfigError) as info:
        build_module(recipe("test_forward_only"))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("model.head: head ForwardOnlyHead cannot be trained")
    assert "targets" in msg and "loss(out, batch)" in msg and "predict(out" in msg


def test_a_head_asking_for_an_unknown_target_fails_in_one_line() -> None:
    with pytest.raises(BlockConfigError, match=r"^model\.head \(UnknownTargetHead\)\.targets: unknown target "
                       r"'offsets'; known: .*heatmap.*register_target"):  # fmt: skip
        build_module(recipe("test_unknown_target"))


@pytest.mark.parametrize(("head", "targets"), [("heatmap", ("heatmap",)), ("simcc", ()), ("regression", ())])
def test_builtin_heads_declare_their_targets(head: str, targets: tuple) -> None:
    r = recipe(head)
    module = build_module(r)
    assert isinstance(module, PoseModule) and module.targets == targets
