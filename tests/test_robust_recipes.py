"""Fuzz table: bad recipes and overrides give one ``error:`` line naming the key, exit 2, no traceback, and
no model is built (tools/train.py runs in-process with ``models.runner`` replaced by a trap)."""

from __future__ import annotations

import runpy
import subprocess
import sys
import types
from pathlib import Path

import pytest
from helpers import ROOT

BASE = ROOT / "configs/pose_baseline.yaml"

# (override or None, recipe text or None, text the one-line error must contain)
CASES = [
    ("model.input_size=[0,64]", None, "model.input_size"),
    ("model.input_size=[96,", None, "model.input_size"),
    ("model.input_size=96", None, "model.input_size"),
    ("model.input_size=[96,64,3]", None, "model.input_size"),
    (None, "_base_: 3\n", "_base_"),
    (None, "_base_: null\n", "_base_"),
    (None, "_base_: [BASE, 7]\n", "_base_"),
    (None, "_base_: nowhere.yaml\n", "nowhere.yaml"),
    (None, "_base_: BASE\nmodel: [1, 2]\n", "model"),
    (None, "- just\n- a list\n", "mapping"),
    (None, "model: {type: topdown_pose\n", "not valid YAML"),
    (None, b"name: caf\xe9\n", "UTF-8"),
    ("train.strategy=foo", None, "train.strategy"),
    ("train.strategy=deepspeed", None, "train.strategy"),
    ("train.strategy=fsdp_find_unused_parameters_true", None, "train.strategy"),
    ("train.devices=0", None, "train.devices"),
    ("train.devices=abc", None, "train.devices"),
    ("train.devices=-2", None, "train.devices"),
    ("train.devices=[]", None, "train.devices"),
    ("train.devices=[-1]", None, "train.devices"),
    ("train.accelerator=tpu", None, "train.accelerator"),
    ("train.precision=8", None, "train.precision"),
    ("train.precision=fp32", None, "train.precision"),
    ("train.num_nodes=0", None, "train.num_nodes"),
    ("train.limit_train_batches=1.5", None, "train.limit_train_batches"),
    ("train.limit_train_batches=-1", None, "train.limit_train_batches"),
    ("train.max_epochs=0", None, "train.max_epochs"),
    ("train.max_epoch=3", None, "train.max_epoch"),
    ("train.optimizer.lr=-1", None, "train.optimizer.lr"),
    ("train.schedule.milestones=[3,1]", None, "milestones"),
    ("data.train_limit=-1", None, "data.train_limit"),
    ("data.train_limit=abc", None, "data.train_limit"),
    ("data.val_limit=0", None, "data.val_limit"),
    ("data.batch_size=0", None, "data.batch_size"),
    ("data.dataset=imagenet", None, "data.dataset"),
    ("data.dataset=coco", None, "data.root"),
    ("data.synthetic.width=8", None, "data.synthetic.width"),
    ("eval.oks_nms=2", None, "eval.oks_nms"),
    ("model=3", None, "model"),
    ("model.type=os:system", None, "task"),
    ("name=../..", None, "name"),
    ("name=a/../../b", None, "name"),
    ("name=", None, "name"),
    ("name=/etc", None, "name"),
    ("train.run_dir=../../outside", None, "train.run_dir"),
    ("train.run_dir=''", None, "train.run_dir"),
    ("=3", None, "override"),
    ("train..max_epochs=3", None, "override"),
    ("max epochs=3", None, "override"),
    ("train.max_epochs={a: [", None, "train.max_epochs"),
]


def run_tool(
    tool: str, argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, trap: bool = True
) -> tuple:
    """Run tools/<tool> in-process (as ``python tools/<tool> ...``); returns (exit code, stdout, stderr).

    With ``trap``, ``models.runner`` (and ``models.compare``) are replaced: a tool that gets past validation fails.
    """
    with monkeypatch.context() as patch:  # undone on return: a later call with trap=False gets the real modules
        if trap:
            fake = types.ModuleType("models.runner")

            def _never(*args, **kwargs):
                raise AssertionError("the recipe passed validation and the tool went on to build the run")

            fake.train = fake.evaluate = _never
            patch.setitem(sys.modules, "models.runner", fake)
            patch.setitem(sys.modules, "models.compare", fake)
        patch.syspath_prepend(str(ROOT / "tools"))
        patch.setattr(sys, "argv", [tool, *argv])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(ROOT / "tools" / tool), run_name="__main__")
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize(("override", "recipe", "key"), CASES, ids=[f"{i}" for i in range(len(CASES))])
def test_bad_recipe_is_one_line_naming_the_key(override, recipe, key, tmp_path, monkeypatch, capsys) -> None:
    config = BASE
    if recipe is not None:
        config = tmp_path / "recipe.yaml"
        config.write_bytes(recipe if isinstance(recipe, bytes) else recipe.replace("BASE", str(BASE)).encode())
    code, out, err = run_tool("train.py", [str(config), *([override] if override else [])], monkeypatch, capsys)
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert key in lines[0], lines[0]


def test_table_covers_the_ten_reported_cases() -> None:
    reported = {
        "model.input_size=[0,64]", "train.strategy=foo", "train.devices=0", "train.devices=abc",
        "data.train_limit=-1", "model.input_size=[96,",
    }  # fmt: skip
    assert reported <= {c[0] for c in CASES}
    assert {"_base_: 3\n", "_base_: null\n", b"name: caf\xe9\n"} <= {c[1] for c in CASES}


def test_overrides_after_options_are_accepted(monkeypatch, capsys) -> None:
    code, _, err = run_tool("train.py", [str(BASE), "--json", "train.devices=0"], monkeypatch, capsys)
    assert code == 2 and err.startswith("error: train.devices"), err
    for tool in ("eval.py", "visualize.py"):
        args = [str(BASE), "--checkpoint", "x.ckpt", "train.devices=0"]
        code, _, err = run_tool(tool, args, monkeypatch, capsys)
        assert code == 2 and err.startswith("error: train.devices"), (tool, err)


def test_validation_and_help_do_not_import_torch() -> None:
    probe = (
        "import os, runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "sys.path.insert(0, os.path.dirname(sys.argv[0]))\n"
        "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as e:\n    print('exit', e.code, 'torch' in sys.modules)\n"
    )
    for args in (["--help"], [str(BASE), "train.devices=0"]):
        proc = subprocess.run(
            [sys.executable, "-c", probe, str(ROOT / "tools/train.py"), *args],
            capture_output=True, text=True, timeout=120, cwd=ROOT,
        )  # fmt: skip
        assert proc.stdout.strip().splitlines()[-1] == f"exit {0 if args == ['--help'] else 2} False", proc.stderr


def test_strategies_exist_in_lightning() -> None:
    from lightning.pytorch.strategies import StrategyRegistry

    from models.train_config import STRATEGIES

    assert set(STRATEGIES) - {"auto"} <= set(StrategyRegistry.available_strategies())


def test_gpu_on_a_cpu_machine_is_one_line(monkeypatch) -> None:
    import torch

    from models.recipe import RecipeError, load_recipe
    from models.runner import check_accelerator

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for value in ("gpu", "cuda"):
        with pytest.raises(RecipeError, match="train.accelerator: .* no CUDA GPU; use train.accelerator=auto"):
            check_accelerator(load_recipe(BASE, [f"train.accelerator={value}"]).train)
    check_accelerator(load_recipe(BASE, ["train.accelerator=auto"]).train)
    for coco in sorted((ROOT / "configs/coco").glob("*.yaml")):  # README: "change one thing" works on a CPU too
        check_accelerator(load_recipe(coco, ["data.root=/data/coco"]).train)


def test_summary_reads_base_and_fails_in_one_line(tmp_path: Path) -> None:
    from models.recipe import read_config

    cfg = read_config((ROOT / "configs/pose_coordconv.yaml").resolve())
    assert cfg["model"]["type"] == "topdown_pose"  # only in the base
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools/summary.py"), str(bad)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "UTF-8" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_tool_answers_help_without_importing_torch() -> None:
    """``--help`` answers from argparse alone (torch, Lightning, OpenCV are imported after parsing)."""
    skip = {"_cli", "bench_peers"}  # not tools: the tools' shared helpers, a module of bench_blocks
    tools = sorted(p for p in (ROOT / "tools").glob("*.py") if p.stem not in skip)
    probe = (
        "import contextlib, io, os, runpy, sys\n"
        "sys.path.insert(0, os.path.dirname(sys.argv[1]))\n"
        "for path in sys.argv[1:]:\n"
        "    sys.argv = [path, '--help']\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        try:\n            runpy.run_path(path, run_name='__main__')\n"
        "        except SystemExit as e:\n            code = e.code\n"
        "    heavy = [m for m in ('torch', 'lightning', 'cv2', 'matplotlib') if m in sys.modules]\n"
        "    print(os.path.basename(path), code, 'usage:' in out.getvalue(), heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe, *map(str, tools)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [f"{p.name} 0 True []" for p in tools], proc.stdout
