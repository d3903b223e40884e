"""Exact resume: RNG state in every checkpoint, Lightning's loop counters saved where it resumes exactly,
logs rewound to the checkpoint, and validation schedules that a resume could not reproduce refused.

Together with the resumable data loader (gptlab.data.sampler), ``last.ckpt`` (gptlab.checkpoints.last) and
the atomic checkpoint IO (gptlab.checkpoints.io), a run resumed from any of its checkpoints continues exactly
as if it had never stopped (on CPU, bitwise).
"""

from __future__ import annotations

import logging
import math
import random
import sys

import lightning as L
import numpy as np
import torch

from gptlab.compat.lightning import (
    batches_that_stepped,
    rewind_to_step_end,
    shift_epoch_batch_count,
    validates_by_time,
)
from gptlab.config.training import validation_inside_accumulation
from gptlab.core.errors import ConfigError


def final_step(trainer: L.Trainer) -> bool:
    """Whether the step just taken ends the run (max_steps, the last epoch's last batch, or a stop request)."""
    if trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step:
        return True
    last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
    return last_epoch and trainer.is_last_batch


def nothing_left_to_train(trainer: L.Trainer, resumed_step: int | None) -> str | None:
    """The note for a resume that took no training step because the run's limit was reached before it (a
    finished run resumed again): Lightning only logged "`Trainer.fit` stopped: `max_steps=N` reached" among
    its INFO lines, and the command ended as if it had trained. None for any other end (a step was taken, a
    stop request before the first one)."""
    if resumed_step is None or trainer.global_step != resumed_step:
        return None
    if 0 < trainer.max_steps <= trainer.global_step:
        limit = f"trainer.max_steps={trainer.max_steps}"
    elif trainer.max_epochs not in (None, -1) and trainer.current_epoch >= trainer.max_epochs:
        limit = f"trainer.max_epochs={trainer.max_epochs}"
    else:
        return None
    return (
        f"note: nothing was left to train: the checkpoint is at step {trainer.global_step}, where {limit} is "
        "reached (the limits count the whole run, across resumes); raise it to train on"
    )


class ResumeAfterValidation(L.Callback):
    """Saves checkpoints taken after a step's validation, or at an epoch's end, as if taken at the end of
    that training step, the one point from which Lightning 2.6 resumes exactly.

    From a checkpoint written at the end of an epoch (where ModelCheckpoint saves when validation runs
    once per epoch) Lightning resumes with its batch counters off by one: the next epoch gets a batch too
    many. With the counters of the end of the last training step, the resume takes Lightning's
    train-batch-end path: it skips the validation already done and goes on exactly where the run was.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        rewind_to_step_end(checkpoint)


class ResumedDataPosition(L.Callback):
    """A run resumed on another number of processes or with another batch size goes on at the same place
    of the epoch's order (gptlab.data.sampler.ResumableDataLoader); Lightning's count of that epoch's
    batches is moved there too. By its old count it ended the epoch early, or with batches still to come,
    and the next checkpoint saved a position that was not the data's. A resume whose windows or seed are
    not the checkpoint's (so neither is the order) is warned of."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        if getattr(loader, "order_changed", None) and trainer.is_global_zero:
            print(loader.order_changed, file=sys.stderr, flush=True)
        if getattr(loader, "resumed_elsewhere", None) is None:
            return
        shift_epoch_batch_count(trainer, loader.batch_count_shift)
        loader.batch_count_shift = 0
        if trainer.is_global_zero:
            logging.getLogger(__name__).info(loader.resumed_elsewhere)


class ValidationBetweenOptimizerSteps(L.Callback):
    """Refuses, before the first step, a validation schedule that lands inside gradient accumulation.

    preflight refuses an integer ``val_check_interval`` that is no multiple of the accumulation already;
    a fraction of an epoch (or validation counted across epochs) is known only once the data is.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        accumulate = trainer.accumulate_grad_batches
        if accumulate == 1 or not trainer.enable_validation or trainer.limit_val_batches == 0:
            return
        setting = trainer.val_check_interval
        if validates_by_time(trainer):
            raise ConfigError(
                f"trainer.val_check_interval={setting} validates by time, which lands inside optimizer steps "
                f"of trainer.accumulate_grad_batches={accumulate}; use a number of batches that is a multiple "
                f"of {accumulate}, or 1.0 (epoch ends)"
            )
        every, batches = trainer.val_check_batch, trainer.num_training_batches
        if every == float("inf"):
            return  # a dataset of unknown length validates at its (stepping) last batch only
        if trainer.check_val_every_n_epoch is None and batches % accumulate:
            # Counted across epochs, while each epoch's last batch steps early: the boundaries drift.
            raise ConfigError(
                f"trainer.check_val_every_n_epoch=null counts validations across epochs, but an epoch of "
                f"{batches} batches is no multiple of trainer.accumulate_grad_batches={accumulate}, so they "
                "would land inside optimizer steps; set trainer.check_val_every_n_epoch=1"
            )
        if every % accumulate and every < batches:
            raise ConfigError(validation_inside_accumulation(setting, int(every), accumulate))


class RngState(L.Callback):
    """Saves the global RNG states (torch, CUDA, numpy, random) with each checkpoint and restores them.

    They are put back when training starts, after the sanity check, so the first step after a resume
    draws the same dropout masks as the run left alone did at that step.
    """

    def __init__(self) -> None:
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, cached = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # plain data only, so the checkpoint still loads with weights_only=True
            "numpy": {
                "kind": kind,
                "keys": keys.tolist(),
                "pos": pos,
                "has_gauss": has_gauss,
                "cached": cached,
            },
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._pending = self._pending, None
        if not state:
            return
        torch.set_rng_state(state["torch"])
        if (
            state.get("cuda")
            and torch.cuda.is_available()
            and len(state["cuda"]) == torch.cuda.device_count()
        ):
            torch.cuda.set_rng_state_all(state["cuda"])
        n = state["numpy"]
        np.random.set_state(
            (n["kind"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"])
        )
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


class ContinueLogs(L.Callback):
    """On resume, drop the CSV rows a killed run logged after its checkpoint: those steps run again."""

    def __init__(self) -> None:
        self._pending = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = bool(trainer.ckpt_path)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if self._pending:  # here, not at on_train_start: the loop sets its logging step when it restarts
            self._pending = False
            from gptlab.training.loggers import drop_logged_rows_from

            drop_logged_rows_from(trainer.loggers, batches_that_stepped(trainer))


class ScheduleChangeWarning(L.Callback):
    """A resumed run whose learning-rate schedule is not the checkpoint's says so before its first step.

    Lightning restores the scheduler's step and base rate, and this run's settings give the shape: a
    longer trainer.max_steps (training on after a finished run) makes the rate jump back up the cosine, and
    a new optim.lr is not used at all (the checkpoint's base rate is). Neither was said.
    """

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.ckpt_path or not trainer.is_global_zero or not trainer.lr_scheduler_configs:
            return
        scheduler = trainer.lr_scheduler_configs[0].scheduler
        if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            return
        warnings = schedule_changes(
            configured_lr=float(getattr(pl_module, "optim_cfg", {}).get("lr", scheduler.base_lrs[0])),
            restored_lr=scheduler.base_lrs[0],
            step=scheduler.last_epoch,
            checkpoint_rate=scheduler.get_last_lr()[0],
            this_runs_rate=scheduler.base_lrs[0] * scheduler.lr_lambdas[0](scheduler.last_epoch),
        )
        for warning in warnings:
            print(warning, file=sys.stderr, flush=True)


def schedule_changes(
    configured_lr: float, restored_lr: float, step: int, checkpoint_rate: float, this_runs_rate: float
) -> list[str]:
    warnings = []
    if not math.isclose(configured_lr, restored_lr, rel_tol=1e-9):
        warnings.append(
            f"warning: optim.lr={configured_lr:g} is not used by a resumed run: the checkpoint's schedule, "
            f"from optim.lr={restored_lr:g}, goes on (Lightning restores it)"
        )
    if not math.isclose(checkpoint_rate, this_runs_rate, rel_tol=1e-6):
        warnings.append(
            f"warning: this run's learning-rate schedule is not the checkpoint's: at step {step} the rate goes "
            f"from {checkpoint_rate:.4g} to {this_runs_rate:.4g} (the schedule's length follows trainer.max_steps or "
            "trainer.max_epochs; warmup and min_lr are scheduler.*); resume with the run's own settings to go "
            "on with its schedule"
        )
    return warnings
