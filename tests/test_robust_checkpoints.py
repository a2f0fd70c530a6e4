"""Checkpoints never run code; ``module:Class`` targets must be nn.Module classes; resume refuses a changed
recipe; eval scores the full val set by default; run folders stay under runs/."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
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
    with pytest.raises(
        RecipeError, match=r"refused: loading it would import and run Python code \(GLOBAL posix.system\)"
    ):
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


class _Call:
    """Unpickling this calls ``func(*args)``: the ways a pickle runs code (os.system, eval, subprocess)."""

    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _good(path: Path, marker: Path) -> dict:
    return {"state_dict": {"w": torch.zeros(2)}, "convzoo_recipe": load_recipe(BASE).model_dump(mode="json")}


def _with_recipe(**changes) -> object:
    """A checkpoint whose stored recipe has ``changes`` applied to its sections (``model={'type': ...}``)."""

    def make(path: Path, marker: Path) -> dict:
        ckpt = _good(path, marker)
        for section, values in changes.items():
            if isinstance(values, dict):
                ckpt["convzoo_recipe"][section].update(values)
            else:
                ckpt["convzoo_recipe"][section] = values
        return ckpt

    return make


def _write(path: Path, content) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)


# Bad checkpoints: (id, maker(path, marker) -> bytes or an object to torch.save (None: make nothing), the text
# tools/eval.py's one-line error must contain, whether train.py --resume refuses it too before any work).
BAD_CHECKPOINTS = [
    ("missing", lambda p, m: None, "not found", True),
    ("empty_file", lambda p, m: b"", "could not be read", True),
    ("text_file", lambda p, m: b"model: resnet\n", "could not be read", True),
    ("random_bytes", lambda p, m: bytes(range(256)) * 8, "could not be read", True),
    ("zip_not_torch", lambda p, m: b"PK\x05\x06" + b"\x00" * 18, "could not be read", True),
    ("os_system", lambda p, m: {"x": _Call(os.system, f"touch {m}")}, "GLOBAL posix.system", True),
    ("builtins_eval", lambda p, m: {"x": _Call(eval, f"open({str(m)!r}, 'w')")}, "GLOBAL eval", True),
    ("builtins_exec", lambda p, m: [_Call(exec, f"open({str(m)!r}, 'w')")], "GLOBAL exec", True),
    ("subprocess", lambda p, m: {"x": _Call(subprocess.call, ["touch", str(m)])}, "refused", True),
    ("pickled_module", lambda p, m: {"model": torch.nn.Linear(2, 2)}, "refused", True),
    ("numpy_array", lambda p, m: {"state_dict": {"w": np.zeros(3)}}, "refused", True),
    ("plain_pickle", lambda p, m: pickle.dumps(_Call(os.system, f"touch {m}")), "could not be read", True),
    ("a_list", lambda p, m: [torch.zeros(1)], "is not a Lightning checkpoint (a list)", True),
    ("a_tensor", lambda p, m: torch.zeros(3), "is not a Lightning checkpoint (a Tensor)", True),
    ("no_recipe", lambda p, m: {"state_dict": {}}, "no recipe stored in this checkpoint", False),
    ("recipe_text", lambda p, m: {"state_dict": {}, "convzoo_recipe": "pose"}, "no recipe stored", False),
    ("recipe_bad_size", _with_recipe(model={"input_size": [0, 64]}), "model.input_size", False),
    ("recipe_unknown_task", _with_recipe(task="segmentation"), "task", False),
    ("recipe_name_escapes", _with_recipe(name="../../x"), "name", False),
    ("recipe_unknown_key", _with_recipe(train={"max_epoch": 3}), "train.max_epoch", False),
]


@pytest.mark.parametrize(("case", "make", "says", "resume"), BAD_CHECKPOINTS, ids=[c[0] for c in BAD_CHECKPOINTS])
def test_bad_checkpoint_is_one_line_and_runs_nothing(case, make, says, resume, tmp_path, monkeypatch, capsys) -> None:
    marker, path = tmp_path / "ran", tmp_path / "bad ü.ckpt"
    content = make(path, marker)
    if content is not None:
        _write(path, content)
    code, _, err = run_tool("eval.py", ["--checkpoint", str(path)], monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and says in err, err
    if resume:  # resume reads the checkpoint before building anything
        run = [f"train.resume={path}", f"train.run_dir={tmp_path / 'run'}"]
        code, _, err = run_tool("train.py", [str(BASE), *run], monkeypatch, capsys, trap=False)
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        assert "refused" in err if "GLOBAL" in says or says == "refused" else True
    assert not marker.exists()


def test_backbone_checkpoint_that_runs_code_is_refused(tmp_path: Path) -> None:
    from convblocks import BlockConfigError
    from models import build_model

    marker, path = tmp_path / "ran", tmp_path / "backbone.pth"
    torch.save({"state_dict": {"x": _Call(os.system, f"touch {marker}")}}, path)
    cfg = load_recipe(BASE).model
    cfg["backbone"] = {**cfg["backbone"], "checkpoint": str(path)}
    with pytest.raises(BlockConfigError, match=r"model.backbone.checkpoint: cannot load .* weights_only=True") as e:
        build_model(cfg)
    assert "\n" not in str(e.value) and not marker.exists()


def test_weights_that_do_not_fit_the_model_are_one_line(tmp_path: Path) -> None:
    from models.runner import build_module, load_weights

    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"model.head.nope": torch.zeros(1)}}, path)
    with pytest.raises(RecipeError, match="does not match the model in the config") as e:
        load_weights(build_module(load_recipe(BASE)), path)
    assert "\n" not in str(e.value)
