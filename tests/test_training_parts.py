"""Training parts: lr schedule, block lr hints in the optimiser, dynamic-conv temperature, epoch sampler."""

from __future__ import annotations

import math
import signal
from types import SimpleNamespace

import pytest
import torch

from convblocks import DynamicConv2d
from data.datamodule import EpochShuffle
from models import build_model
from models.callbacks import DynamicTemperature, QuietWorkerExit
from models.optim import build_optimizer, build_scheduler, lr_factor
from models.train_config import OptimizerConfig, ScheduleConfig, TemperatureConfig

POSE = {
    "type": "topdown_pose",
    "input_size": [64, 64],
    "backbone": {"name": "resnet18", "out_indices": [4]},
    "head": {"type": "heatmap", "deconv_channels": 8},
}


def test_multistep_with_warmup_matches_the_formula() -> None:
    cfg = ScheduleConfig(type="multistep", milestones=[2, 4], gamma=0.1, warmup_steps=10, warmup_ratio=0.001)
    assert lr_factor(0, 10, 6, cfg) == pytest.approx(0.001)
    assert lr_factor(5, 10, 6, cfg) == pytest.approx(0.001 + 0.999 * 0.5)
    assert [lr_factor(s, 10, 6, cfg) for s in (10, 19, 20, 39, 40, 59)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_reaches_min_ratio_at_the_end() -> None:
    cfg = ScheduleConfig(type="cosine", min_lr_ratio=0.05)
    assert lr_factor(0, 10, 4, cfg) == pytest.approx(1.0)
    assert lr_factor(20, 10, 4, cfg) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert lr_factor(40, 10, 4, cfg) == pytest.approx(0.05)


def test_dcn_offsets_get_their_lr_multiplier_through_the_schedule() -> None:
    rule = {"stages": [4], "kernel_size": 3, "block": {"type": "dcnv2", "offset_lr_mult": 0.1}}
    cfg = {**POSE, "backbone": {**POSE["backbone"], "blocks": [rule]}}
    model = build_model(cfg)
    opt = build_optimizer(model, OptimizerConfig(type="sgd", lr=0.5))
    offsets = {id(p) for n, p in model.named_parameters() if "conv_offset" in n}
    assert len(offsets) == 2 * 4  # weight + bias of the offset conv in 4 replaced 3x3 convs
    lrs = {g["lr"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    assert lrs[0.05] == offsets and len(lrs) == 2
    sched = build_scheduler(opt, ScheduleConfig(type="multistep", milestones=[1]), steps_per_epoch=2, max_epochs=3)
    for _ in range(2):
        opt.step()
        sched.step()
    assert sorted(g["lr"] for g in opt.param_groups) == pytest.approx([0.005, 0.05])


def test_temperature_callback_anneals_every_dynamic_conv() -> None:
    cfg = {**POSE, "backbone": {**POSE["backbone"], "blocks": [{"stages": [4], "kernel_size": 3, "block": "dynamic"}]}}
    model = build_model(cfg)
    blocks = [m for m in model.modules() if isinstance(m, DynamicConv2d)]
    assert blocks and DynamicTemperature.applies(model)
    cb = DynamicTemperature(TemperatureConfig(start=30, end=1, epochs=2))
    module = SimpleNamespace(modules=model.modules, log=lambda *a, **k: None)
    trainer = SimpleNamespace(current_epoch=1, num_training_batches=4)
    cb.on_train_batch_start(trainer, module, None, 2)  # epoch 1.5 of 2: 30 + (1 - 30) * 0.75
    assert all(float(b.temperature) == pytest.approx(8.25) for b in blocks)
    trainer.current_epoch = 5
    cb.on_train_batch_start(trainer, module, None, 0)
    assert all(float(b.temperature) == 1.0 for b in blocks)


def test_epoch_shuffle_is_a_function_of_seed_and_epoch() -> None:
    seen = []
    ds = SimpleNamespace(set_epoch=lambda seed, epoch: seen.append((seed, epoch)))
    a, b = EpochShuffle(50, seed=3, dataset=ds), EpochShuffle(50, seed=3)
    first = list(a)
    assert sorted(first) == list(range(50)) and first == list(b)
    a.set_epoch(1)
    assert list(a) != first and seen == [(3, 0), (3, 1)]
    b.set_epoch(1)
    assert list(a) == list(b)
    assert torch.equal(torch.tensor(list(EpochShuffle(50, seed=4))), torch.tensor(list(EpochShuffle(50, seed=4))))


def test_precision_auto_is_bf16_only_where_the_hardware_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from models.runner import resolve_precision

    assert resolve_precision("16-mixed", "cpu") == "16-mixed"  # explicit choices pass through
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert resolve_precision("auto", "auto") == resolve_precision("auto", "cpu") == "bf16-mixed"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert resolve_precision("auto", "cpu") == "32-true"


def test_sigterm_in_fit_turns_sigchld_off_before_lightnings_handler_runs() -> None:
    """A killed worker's SIGCHLD must not raise inside Lightning's SIGTERM handler (it logs a line first)."""
    seen = []
    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGCHLD)
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signal.getsignal(signal.SIGCHLD)))
        QuietWorkerExit().on_train_start(None, None)
        QuietWorkerExit().on_train_start(None, None)  # fit's second start: still one step in front
        signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)
        assert len(seen) == 1 and callable(seen[0]) and seen[0] not in (signal.SIG_DFL, signal.SIG_IGN)
        assert seen[0](signal.SIGCHLD, None) is None
    finally:
        signal.signal(signal.SIGTERM, saved[0])
        signal.signal(signal.SIGCHLD, saved[1])
