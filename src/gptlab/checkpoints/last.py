"""``last.ckpt``: the state at the end of the run, whatever its validations said."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from gptlab.compat.lightning import (
    last_saved_at,
    optimizer_step_pending,
    save_last,
    saving_now_skipped,
    validation_due,
)


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: the state at the end of the run, after every validation, and every
    ``every_n_train_steps`` optimizer steps in between (so a crash loses at most that many steps).

    Lightning's own ``save_last`` rewrites ``last.ckpt`` at a validation only when the monitored metric
    improved, and not at the end of training once anything was saved: the final weights of a run whose
    last validations did not improve would be in no file. This callback owns ``last.ckpt`` alone; the
    best-by-``val/loss`` file is the other ModelCheckpoint's job.

    Saves happen only at optimizer-step boundaries, never with half-accumulated gradients (which are not
    part of a checkpoint), so a run resumed from any of them continues exactly.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 0):
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,
            save_last=True,
            enable_version_counter=False,
        )
        self.every_n_train_steps = every_n_train_steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        n = self.every_n_train_steps
        if n < 1 or trainer.global_step % n or optimizer_step_pending(trainer):
            return
        if validation_due(trainer):
            # Its save follows the validation: a checkpoint taken before it would, on resume, skip it.
            return
        if not saving_now_skipped(self, trainer):  # also: not twice at one step
            save_last(self, trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # an epoch's end is saved by the validation that follows it, or by the end of training

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Always, even at a step already saved: the validation itself changed what a resume must know.
        if not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING and not trainer.fast_dev_run:
            save_last(self, trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run:
            return
        if last_saved_at(self) != trainer.global_step:
            save_last(self, trainer)



def checkpoint_dir(trainer: L.Trainer) -> Path:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        return Path(callback.dirpath)
    return Path(trainer.default_root_dir) / "checkpoints"


def kept_checkpoint(trainer: L.Trainer) -> str:
    """What a run that stops on an error leaves to go on from, in words: the newest checkpoint on disk (any is
    from before the failing step: saves happen after an optimizer step), or that none was saved yet."""
    saved = [c.last_model_path for c in trainer.callbacks if isinstance(c, LastCheckpoint)]
    saved += [c.best_model_path for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    for path in saved:
        if path and Path(path).is_file():
            return f"the last checkpoint, {path}, is kept (weights from before this step)"
    return "no checkpoint was saved before it"
