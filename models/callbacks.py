"""Training callbacks: dynamic-conv temperature annealing, per-epoch reseeding (exact resume), atomic last
checkpoints, throughput, and a SIGTERM that stops at a step boundary without the workers' tracebacks."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import lightning as L
import torch.nn as nn

from convblocks import temperature_schedule

from .train_config import TemperatureConfig


def temperature_blocks(model: nn.Module) -> list[nn.Module]:
    """Modules that provide the ``set_temperature(tau)`` hook (softmax-attention blocks such as the dynamic
    conv): the training loop anneals them, as it honours the ``lr_mults()`` hint in the optimiser."""
    return [m for m in model.modules() if callable(getattr(m, "set_temperature", None))]


class DynamicTemperature(L.Callback):
    """Anneals τ of every block with a ``set_temperature`` hook per step: ``start`` → ``end`` over ``epochs``
    (fractional epochs)."""

    def __init__(self, cfg: TemperatureConfig) -> None:
        self.cfg = cfg
        self.tau = cfg.start

    @staticmethod
    def applies(model: nn.Module) -> bool:
        return bool(temperature_blocks(model))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        epoch = trainer.current_epoch + batch_idx / max(1, trainer.num_training_batches)
        self.tau = temperature_schedule(epoch, self.cfg.epochs, self.cfg.start, self.cfg.end)
        for block in temperature_blocks(pl_module):
            block.set_temperature(self.tau)
        pl_module.log("train/temperature", self.tau, batch_size=1)


class ReseedEachEpoch(L.Callback):
    """Seeds torch/numpy/random from ``(seed, epoch)`` at each epoch start, before the loader's workers start.

    Augmentation draws then depend on the epoch only, so a run resumed from an epoch checkpoint repeats
    exactly what an uninterrupted run would have done.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        L.seed_everything(self.seed * 1000 + trainer.current_epoch + 1, workers=True, verbose=False)


class Throughput(L.Callback):
    """Training images per second over the last training epoch (data loading included, validation not)."""

    def __init__(self) -> None:
        self.images_per_s: float | None = None
        self._start, self._images = 0.0, 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        images = batch["image"] if isinstance(batch, dict) else batch[0]
        self._images += len(images)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self._start
        if self._images and seconds > 0:
            self.images_per_s = round(self._images * trainer.world_size / seconds, 2)


class ValidateLastEpoch(L.Callback):
    """Validates the final epoch even when ``check_val_every_n_epoch`` would skip it (the reported result)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.max_epochs is not None and trainer.current_epoch == trainer.max_epochs - 1:
            trainer.check_val_every_n_epoch = 1


class LastCheckpoint(L.Callback):
    """Writes ``last.ckpt`` after every training epoch (and every ``every_n_steps`` steps), atomically.

    The file is written beside the old one and then renamed over it, so a kill while saving keeps the
    previous checkpoint intact: at most the work since the last save is lost.
    """

    def __init__(self, dirpath: str | Path, every_n_steps: int | None = None) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = every_n_steps

    def save(self, trainer: L.Trainer) -> None:
        tmp = self.path.with_name("last.ckpt.tmp")
        trainer.save_checkpoint(tmp, weights_only=False)  # the full state, for an exact resume
        if trainer.is_global_zero:
            os.replace(tmp, self.path)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)


class EpochLine(L.Callback):
    """One printed line per epoch (loss, val AP when validated, seconds): progress for logs without a bar."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        line = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        if "train/loss" in m:
            line += f"  train/loss {float(m['train/loss']):.5f}"
        if pl_module.history and pl_module.history[-1].get("epoch") == trainer.current_epoch:
            line += f"  val/AP {pl_module.history[-1]['AP']:.4f}"
        print(f"{line}  ({time.perf_counter() - self._start:.0f} s)", flush=True)


class QuietWorkerExit(L.Callback):
    """Lightning stops on SIGTERM at the end of the current step; a SIGTERM to the process group also kills the
    data-loader workers, and PyTorch's SIGCHLD handler would raise "worker killed" wherever the main process is,
    Lightning's own SIGTERM handler included. Once Lightning has installed that handler (before training starts),
    this puts a step in front of it: the main process stops listening to SIGCHLD, then Lightning's runs."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        chain = signal.getsignal(signal.SIGTERM)
        in_main = threading.current_thread() is threading.main_thread()
        if in_main and callable(chain) and not isinstance(chain, _SigchldOffFirst):
            signal.signal(signal.SIGTERM, _SigchldOffFirst(chain, os.getpid()))


class _SigchldOffFirst:
    """SIGTERM handler: in the main process SIGCHLD becomes a no-op, then ``chain`` runs; Lightning's teardown
    puts the handlers from before the fit back."""

    def __init__(self, chain, main_pid: int) -> None:  # noqa: ANN001 - a signal handler
        self.chain, self.main_pid = chain, main_pid

    def __call__(self, signum: int, frame: object) -> None:
        if os.getpid() == self.main_pid:
            signal.signal(signal.SIGCHLD, _ignore_signal)
        self.chain(signum, frame)


def _ignore_signal(signum: int, frame: object) -> None:
    """A Python no-op rather than SIG_DFL: a SIGCHLD already pending would otherwise make Python print "Signal 17
    ignored due to race condition" when it gets to it."""
