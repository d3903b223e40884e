"""The training progress bar: Lightning's rich bar, brought up to date at most ten times a second."""

from __future__ import annotations

import math
import time
from importlib.util import find_spec
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar
from omegaconf import DictConfig


class SteadyProgressBar(RichProgressBar):
    """Lightning's rich progress bar, updated after a training batch only when ``min_interval_s`` has passed.

    Lightning updates the bar and reads every logged metric again after each batch: 0.19 ms, 0.5% of a
    40 ms step of `make train` (0.4 s of its run), for a terminal line that the bar's own thread redraws
    at most ten times a second. A skipped update is not lost: the bar shows absolute counts, and the
    newest one is shown before each validation and at the end of the epoch and of the run.
    """

    def __init__(self, min_interval_s: float = 0.1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_interval_s = min_interval_s
        self._updated_at = -float("inf")
        self._skipped: tuple | None = None  # the arguments of the newest batch end not yet shown
        self._trained_in_epoch = 0  # batches of this epoch trained when its bar is made

    @property
    def total_train_batches(self) -> int | float:
        """The batches this epoch will train: up to trainer.max_steps where the run ends inside the epoch.

        Lightning counts the whole epoch unless max_epochs=-1 (and then counts optimizer steps as batches):
        `make train`, 2,000 steps of an 83,649-batch epoch, showed 3/83649 and 1:21:22 left of a run of two
        minutes."""
        trainer = self.trainer
        total = trainer.num_training_batches
        if trainer.max_steps is None or trainer.max_steps < 0 or not math.isfinite(total):
            return super().total_train_batches
        steps_left = max(trainer.max_steps - trainer.global_step, 0)
        return min(total, self._trained_in_epoch + steps_left * trainer.accumulate_grad_batches)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        self._trained_in_epoch = 0
        super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.train_progress_bar_id is None:
            # An epoch resumed in its middle: Lightning makes its bar at the first batch shown, not at the
            # epoch's start, and counts on from the batches trained before.
            self._trained_in_epoch = batch_idx + 1
        now = time.monotonic()
        if now - self._updated_at < self.min_interval_s and not _run_ends_after(trainer, batch_idx):
            self._skipped = (trainer, pl_module, outputs, batch, batch_idx)
            return
        self._updated_at, self._skipped = now, None
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def _show_skipped(self) -> None:
        if self._skipped is not None:
            skipped, self._skipped = self._skipped, None
            super().on_train_batch_end(*skipped)

    def on_validation_start(self, trainer: L.Trainer, pl_module) -> None:
        self._show_skipped()
        super().on_validation_start(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        self._show_skipped()
        super().on_train_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self._show_skipped()
        super().on_train_end(trainer, pl_module)


def _run_ends_after(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether this batch is the epoch's last or completed the run's last optimizer step."""
    return batch_idx + 1 >= trainer.num_training_batches or 0 < trainer.max_steps <= trainer.global_step


def training_progress_bar(cfg: DictConfig, configured: list) -> list[ProgressBar]:
    """The bar train.py adds: ours, unless the config turns the bar off or names one itself, or rich (which
    Lightning's default bar needs too; else Lightning shows tqdm's) is not installed."""
    if not cfg.trainer.get("enable_progress_bar", True) or any(isinstance(c, ProgressBar) for c in configured):
        return []
    return [SteadyProgressBar()] if find_spec("rich") else []
