"""Checkpoints never run code; ``module:Class`` targets must be nn.Module classes; resume refuses a changed
recipe; eval scores the full val set by default; run folders stay under runs/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from helpers import ROOT
from test_robust_recipes import run_tool

from models.checkpoint import check_resume, eval_recipe, read_checkpoint
from models.recipe import RecipeError, load_recipe

BASE = ROOT / "configs/pose_baseline.yaml"


class _Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    recipe = load_recipe(BASE).model_dump(mode="json")
    torch.save({"state_dict": {}, "convzoo_recipe": recipe, "x": _Payload(marker)}, path)
    torch.load(path, weights_only=False)  # the unsafe unpickler really runs the payload ...
    assert marker.exists()
    marker.unlink()  # ... so a marker that stays absent below shows that nothing ran
    return path, marker


def fake_checkpoint(path: Path, overrides: list[str]) -> Path:
    """A checkpoint holding only the stored recipe (what eval and resume read first)."""
    torch.save({"state_dict": {}, "convzoo_recipe": load_recipe(BASE, overrides).model_dump(mode="json")}, path)
    return path


def test_malicious_checkpoint_is_refused_by_every_tool(evil, tmp_path, monkeypatch, capsys) -> None:
    path, marker = evil
    with pytest.raises(RecipeError, match=r"refused: it holds Python objects .*GLOBAL posix.system"):
        read_checkpoint(path)
    code, _, err = run_tool("eval.py", ["--checkpoint", str(path)], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: checkpoint {str(path)!r} refused"), err
    code, _, err = run_tool("eval.py", [str(BASE), "--checkpoint", str(path)], monkeypatch, capsys, trap=False)
    assert code == 2 and "refused" in err and "Traceback" not in err, err
    run = ["--resume", f"train.resume={path}", f"train.run_dir={tmp_path / 'run'}"]
    code, _, err = run_tool("train.py", [str(BASE), *run], monkeypatch, capsys, trap=False)
    assert code == 2 and err.count("\n") == 1 and "refused" in err, err
    code, _, err = run_tool("visualize.py", [str(BASE), "--checkpoint", str(path)], monkeypatch, capsys, trap=False)
    assert code == 2 and "refused" in err, err
    assert not marker.exists()


def test_import_path_targets_must_be_module_classes(tmp_path: Path) -> None:
    from convblocks import BlockConfigError, build_block
    from models import build_model

    marker = tmp_path / "ran"
    with pytest.raises(BlockConfigError, match="'os:system' is not an nn.Module class"):
        build_model({"type": "os:system", "command": f"touch {marker}"})
    with pytest.raises(BlockConfigError, match="'os:system' is not an nn.Module class"):
        build_block({"type": "os:system", "command": f"touch {marker}"})
    assert not marker.exists()
    assert type(build_block({"type": "torch.nn:Conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 1}))
    with pytest.raises(BlockConfigError, match="not an nn.Module class"):
        build_block({"type": "torch.nn:functional"})


def test_resume_refuses_a_changed_recipe_and_keeps_config_yaml(tmp_path, monkeypatch, capsys) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    ckpt = fake_checkpoint(run_dir / "checkpoints/last.ckpt", [f"train.run_dir={run_dir}"])
    (run_dir / "config.yaml").write_text("kept\n")
    changed = [f"train.run_dir={run_dir}", "train.optimizer.lr=0.5", "model.head.deconv_channels=8", "--resume"]
    code, _, err = run_tool("train.py", [str(BASE), *changed], monkeypatch, capsys, trap=False)
    assert code == 2 and err.count("\n") == 1, err
    assert "model.head.deconv_channels, train.optimizer.lr" in err and "may change" in err
    assert (run_dir / "config.yaml").read_text() == "kept\n"
    # Safe keys (the length of the run, logging, loaders) may change.
    safe = load_recipe(BASE, [f"train.run_dir={run_dir}", "train.max_epochs=20", "data.num_workers=0"])
    check_resume(ckpt, safe.model_copy(update={"train": safe.train.model_copy(update={"resume": True})}))


def test_eval_scores_the_full_val_set_unless_told(tmp_path: Path) -> None:
    ckpt = fake_checkpoint(tmp_path / "a.ckpt", ["data.val_limit=2"])
    assert eval_recipe(ckpt).data.val_limit is None
    assert eval_recipe(ckpt, ["data.val_limit=5"]).data.val_limit == 5
    assert eval_recipe(ckpt).name == "pose_baseline"


def test_compare_name_cannot_leave_runs(monkeypatch, capsys) -> None:
    for name in ("../../x", "", "a/../../b", "/tmp/x"):
        code, _, err = run_tool("compare.py", [str(BASE), "--name", name], monkeypatch, capsys)
        assert code == 2 and err.startswith("error: --name:") and "Traceback" not in err, (name, err)
    from models.compare.spec import ComparisonSpec

    with pytest.raises(ValueError, match="cannot name a run folder"):
        ComparisonSpec(name="../..", variants={"a": {}})


def test_unwritable_run_dir_is_one_line_at_start(tmp_path: Path) -> None:
    from models.runner import train

    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(RecipeError, match="train.run_dir: cannot write to"):
        train(load_recipe(BASE, [f"train.run_dir={blocked / 'run'}"]))
