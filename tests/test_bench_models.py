"""tools/bench_models.py: the training step it times is the recipe's, and a quick run end to end."""

import json
import warnings

import pytest
import torch
from helpers import ROOT, TINY
from test_robust_recipes import run_tool

from models.compare.train_cost import train_step_costs
from models.recipe import load_recipe
from models.runner import build_datamodule, build_module


def test_timed_loss_is_the_training_step_loss():
    recipe = load_recipe(ROOT / "configs/pose_baseline.yaml", TINY)
    datamodule = build_datamodule(recipe)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    module = build_module(recipe).train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        expected = module.training_step(batch, 0)
    assert torch.equal(module.training_loss(batch), expected)


def test_train_step_costs_time_every_variant_at_its_batch_size():
    recipes = {
        "a": load_recipe(ROOT / "configs/pose_baseline.yaml", TINY),
        "b": load_recipe(ROOT / "configs/pose_baseline.yaml", [*TINY, "data.batch_size=2"]),
    }
    costs = train_step_costs(recipes, reps=1, warmup=0)
    assert [costs[k]["batch_size"] for k in "ab"] == [4, 2]
    for c in costs.values():
        assert c["train_step_ms"] > 0 and c["train_images_per_s"] == pytest.approx(
            c["batch_size"] / c["train_step_ms"] * 1e3
        )


def test_quick_run_writes_a_row_per_recipe(tmp_path, monkeypatch, capsys):
    out = tmp_path / "models.json"
    recipes = [str(ROOT / "configs/pose_baseline.yaml"), str(ROOT / "configs/pose_coordconv.yaml")]
    argv = [*recipes, *TINY, "--reps", "1", "--warmup", "0", "--out", str(out)]
    code, stdout, stderr = run_tool("bench_models.py", argv, monkeypatch, capsys, trap=False)
    assert code == 0, stderr[-2000:]
    rows = json.loads(out.read_text())["models"]
    assert list(rows) == ["pose_baseline", "pose_coordconv"]
    assert rows["pose_coordconv"]["params"] > rows["pose_baseline"]["params"]  # coordinate weights
    assert "pose_coordconv" in stdout and "x first" in stdout


def test_bad_input_is_one_line(monkeypatch, capsys):
    code, _, stderr = run_tool("bench_models.py", ["model.backbone.name=resnet18"], monkeypatch, capsys, trap=False)
    assert code == 2 and stderr.startswith("error: no recipe given") and "Traceback" not in stderr
    code, _, stderr = run_tool("bench_models.py", [str(ROOT / "configs/nope.yaml")], monkeypatch, capsys, trap=False)
    assert code == 2 and "nope.yaml" in stderr and "Traceback" not in stderr
