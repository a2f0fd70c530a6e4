"""End to end: train → checkpoint → eval (synthetic set and the real COCO sample), resume after a kill,
2-process CPU DDP evaluation equal to a single process, and the tools' one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ROOT, SAMPLE, TINY, tool

from models import build_model
from models.recipe import load_recipe
from models.run_logs import read_csv_logs
from models.runner import train

BASE = ROOT / "configs/pose_baseline.yaml"


def run_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{") :])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], object]:
    run_dir = tmp_path_factory.mktemp("run") / "synth"
    overrides = [*TINY, f"train.run_dir={run_dir}"]
    return overrides, train(load_recipe(BASE, overrides))


def test_train_writes_run_dir_and_eval_reproduces_its_ap(trained, tmp_path: Path) -> None:
    overrides, result = trained
    run = Path(result.run_dir)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert {"config.yaml", "summary.json", "logs", "tb"} <= {p.name for p in run.iterdir()}
    assert list(result.metrics) == ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"]
    assert result.train_images_per_s > 0
    # Each validation records where it stands: epoch, optimizer step, cumulative training seconds.
    steps = [h["step"] for h in result.history]
    assert [h["epoch"] for h in result.history] == sorted({h["epoch"] for h in result.history})
    assert steps == sorted(steps) and steps[-1] > 0
    assert 0 < result.history[-1]["train_seconds"] <= result.seconds
    # The resolved config (the model's defaults filled in) reloads to the recipe as built, and the checkpoint
    # stores it: eval needs no CONFIG.
    saved, given = load_recipe(run / "config.yaml"), load_recipe(BASE, overrides)
    assert saved.model == build_model(given.model).config
    assert saved.model["head"]["final_kernel"] == 1 and saved.model["backbone"]["kwargs"] == {}
    assert saved.model_dump(exclude={"model"}) == given.model_dump(exclude={"model"})
    out = tmp_path / "results.json"
    ev = run_json(tool("eval.py", "--checkpoint", result.best_checkpoint, "--json", "--out", str(out)))
    assert ev["metrics"] == pytest.approx(result.metrics, abs=1e-12)
    results = json.loads(out.read_text())
    assert results and all(len(r["keypoints"]) == 17 * 3 for r in results)


def test_eval_prints_the_table_and_rejects_a_foreign_checkpoint(trained) -> None:
    overrides, result = trained
    proc = tool("eval.py", str(BASE), *overrides, "--checkpoint", result.best_checkpoint, "--no-flip")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| AP | AP50 | AP75 | APm | APl | AR | AR50 | AR75 | ARm | ARl |" in proc.stdout
    other = tool("eval.py", str(ROOT / "configs/pose_dcn.yaml"), *overrides, "--checkpoint", result.best_checkpoint)
    assert other.returncode == 2
    assert other.stderr.startswith("error: checkpoint") and "does not match the model" in other.stderr
    assert "Traceback" not in other.stderr


def test_ddp_two_cpu_processes_give_the_same_ap_as_one(trained, tmp_path: Path) -> None:
    overrides, result = trained
    ckpt = result.best_checkpoint
    single = run_json(tool("eval.py", "--checkpoint", ckpt, "--json", "--out", str(tmp_path / "a.json")))
    ddp = ["train.accelerator=cpu", "train.devices=2", "train.strategy=ddp"]
    out = tmp_path / "b.json"
    double = run_json(tool("eval.py", *ddp, "--checkpoint", ckpt, "--json", "--out", str(out)))
    assert double["metrics"] == single["metrics"]
    # The sampler pads an odd-sized set with repeats; each instance must be scored exactly once. (Keypoints
    # may differ in the last digit: the two processes batch different crops, and oneDNN's sums follow.)
    ids = [r["image_id"] for r in json.loads(out.read_text())]
    assert ids == [r["image_id"] for r in json.loads((tmp_path / "a.json").read_text())]
    assert len(ids) == single["n_results"] == double["n_results"]
    # Training runs under DDP too.
    proc = tool("train.py", str(BASE), *overrides, *ddp, f"train.run_dir={tmp_path / 'ddp'}", "--json")
    assert run_json(proc)["metrics"]["AP"] >= 0.0
    assert (tmp_path / "ddp/checkpoints/last.ckpt").is_file()


KILLER = """
import os, signal, sys
import lightning as L
from models import build_model
from models.recipe import load_recipe
from models.runner import train

class Kill(L.Callback):
    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

train(load_recipe(sys.argv[1], sys.argv[2:]), [Kill()])
"""


def test_resume_after_kill_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    common = [*TINY, "train.max_epochs=3", "train.val_every=1"]  # with augmentation: reseeded per epoch
    whole = train(load_recipe(BASE, [*common, f"train.run_dir={tmp_path / 'whole'}"]))
    killed = [*common, f"train.run_dir={tmp_path / 'killed'}"]
    proc = subprocess.run([sys.executable, "-c", KILLER, str(BASE), *killed], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    ckpt = torch.load(tmp_path / "killed/checkpoints/last.ckpt", weights_only=False)
    assert ckpt["epoch"] == 0  # one epoch done, then killed
    again = tool("train.py", str(BASE), *killed)
    assert again.returncode == 2 and "--resume" in again.stderr  # never silently overwrites a run
    resumed = run_json(tool("train.py", str(BASE), *killed, "--resume", "--json"))
    assert resumed["metrics"] == pytest.approx(whole.metrics, abs=1e-9)
    a = torch.load(tmp_path / "whole/checkpoints/last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "killed/checkpoints/last.ckpt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    # The logs survive the resume (Lightning's CSVLogger would delete metrics.csv): same rows as the whole run.
    assert (tmp_path / "killed/logs/resume1/metrics.csv").is_file()
    logged = [read_csv_logs(tmp_path / run) for run in ("whole", "killed")]
    losses = [[(r["step"], float(r["train/loss"])) for r in rows if r.get("train/loss")] for rows in logged]
    assert [s for s, _ in losses[1]] == [s for s, _ in losses[0]] and len(losses[0]) > 3
    assert [v for _, v in losses[1]] == pytest.approx([v for _, v in losses[0]], abs=1e-6)


def test_sigterm_to_the_job_ends_in_one_line_and_the_run_resumes(tmp_path: Path) -> None:
    """As a scheduler stops a job: SIGTERM to the whole process group (the data-loader worker too), mid-run."""
    run = [*TINY, "train.max_epochs=500", "data.num_workers=1", f"train.run_dir={tmp_path / 'run'}"]
    last = tmp_path / "run/checkpoints/last.ckpt"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "tools/train.py"), str(BASE), *run]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    proc = subprocess.Popen(cmd, **pipes, env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)  # into a later epoch
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("stopped by SIGTERM; resume with --resume")
    epoch = torch.load(last, weights_only=False)["epoch"]
    assert 0 <= epoch < 499
    resumed = tool("train.py", str(BASE), *run, f"train.max_epochs={epoch + 2}", "--resume", "--json")
    assert run_json(resumed)["metrics"]["AP"] >= 0.0
    assert torch.load(last, weights_only=False)["epoch"] == epoch + 1


@pytest.mark.skipif(not (SAMPLE / "test_coco.json").is_file(), reason=f"real COCO sample not found at {SAMPLE}")
def test_real_coco_sample_train_then_eval_with_detections(tmp_path: Path) -> None:
    ann, dets = SAMPLE / "test_coco.json", SAMPLE / "test_coco_det_AP_H_56.json"
    data = ["data.dataset=coco", f"data.train_ann={ann}", f"data.train_images={SAMPLE}", f"data.val_ann={ann}"]
    overrides = [*TINY, *data, f"data.val_images={SAMPLE}", f"train.run_dir={tmp_path / 'coco'}"]
    result = train(load_recipe(BASE, overrides))
    out = tmp_path / "dets_results.json"
    args = ["--checkpoint", result.last_checkpoint, "--det-boxes", str(dets), "--out", str(out), "--json"]
    ev = run_json(tool("eval.py", str(BASE), *overrides, *args))
    assert set(ev["metrics"]) == {"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}
    results = json.loads(out.read_text())
    boxes = json.loads(dets.read_text())
    assert 0 < len(results) <= len(boxes)  # one pose per detected box, fewer after OKS-NMS
    assert {r["image_id"] for r in results} <= {b["image_id"] for b in boxes}


def test_missing_images_are_one_line_errors(tmp_path: Path) -> None:
    empty = tmp_path / "images"
    empty.mkdir()
    proc = tool("train.py", str(BASE), *TINY, f"data.val_images={empty}", f"train.run_dir={tmp_path / 'x'}")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "images are missing" in proc.stderr and "Traceback" not in proc.stderr


def test_detection_recipe_trains_and_reports_bbox_ap(tmp_path: Path) -> None:
    det = ROOT / "configs/det_dcn.yaml"
    tiny = [
        "model.fpn_channels=32", "data.synthetic.train_images=6",
        "data.synthetic.val_images=3", "data.num_workers=0", "data.batch_size=2", "train.max_epochs=1",
        "train.progress_bar=false", "train.schedule.warmup_steps=0", f"train.run_dir={tmp_path / 'det'}",
    ]  # fmt: skip
    result = train(load_recipe(det, tiny))
    assert list(result.metrics) == ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR", "ARs", "ARm", "ARl"]
    proc = tool("eval.py", str(det), *tiny, "--checkpoint", result.best_checkpoint)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "COCOeval bbox" in proc.stdout and "| AP | AP50 | AP75 | APs |" in proc.stdout
