"""Runs that survive being stopped: RNG state in every checkpoint, and a clean stop on SIGTERM / SIGINT.

Together with the resumable data loader (gptlab.sampler) and the atomic checkpoint IO (gptlab.atomic),
a run resumed from any of its checkpoints continues exactly as if it had never stopped (on CPU, bitwise).
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from gptlab.atomic import atomic_torch_save, load_checkpoint_safely
from gptlab.errors import ConfigError, TrainingInterrupted
from gptlab.preflight import validation_inside_accumulation

# Test hook: seconds to sleep after every training step, so a test can kill a tiny run mid-epoch.
SLOW_STEPS_ENV = "GPTLAB_TEST_SLOW_STEPS"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with an fsynced atomic write and a weights-only, explained read."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict:
        return load_checkpoint_safely(path, map_location=map_location)


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
        if not self._should_skip_saving_checkpoint(trainer):  # also: not twice at one step
            self._save_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # an epoch's end is saved by the validation that follows it, or by the end of training

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Always, even at a step already saved: the validation itself changed what a resume must know.
        if not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING and not trainer.fast_dev_run:
            self._save_last(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.fast_dev_run:
            return
        if not self._last_checkpoint_saved or self._last_global_step_saved != trainer.global_step:
            self._save_last(trainer)

    def _save_last(self, trainer: L.Trainer) -> None:
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


# Two questions about the batch just trained on, answered by Lightning 2.6's training epoch loop itself
# (private methods), so that our checkpoints follow exactly the rules its loop runs by.


def optimizer_step_pending(trainer: L.Trainer) -> bool:
    """Whether the batch left its gradients accumulating for a later optimizer step."""
    return trainer.fit_loop.epoch_loop._should_accumulate()


def final_step(trainer: L.Trainer) -> bool:
    """Whether the step just taken ends the run (max_steps, the last epoch's last batch, or a stop request)."""
    if trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step:
        return True
    last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
    return last_epoch and trainer.is_last_batch


def validation_due(trainer: L.Trainer) -> bool:
    """Whether a validation runs right after this batch (Lightning resumes a checkpoint taken between the
    two past that validation, as if it had run)."""
    return bool(trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher))


class ResumeAfterValidation(L.Callback):
    """Saves checkpoints taken after a step's validation, or at an epoch's end, as if taken at the end of
    that training step, the one point from which Lightning 2.6 resumes exactly.

    From a checkpoint written at the end of an epoch (where ModelCheckpoint saves when validation runs
    once per epoch) Lightning resumes with its batch counters off by one: the next epoch gets a batch too
    many. With the counters of the end of the last training step, the resume takes Lightning's
    train-batch-end path: it skips the validation already done and goes on exactly where the run was.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        loop = checkpoint.get("loops", {}).get("fit_loop", {})
        batches, epochs = loop.get("epoch_loop.batch_progress"), loop.get("epoch_progress")
        if not batches or not epochs:
            return
        current = batches["current"]
        if not current["processed"] or not current["completed"] == current["processed"] == current["ready"]:
            return  # saved at the end of a training step already (or before any)
        for counters in (batches["current"], batches["total"]):
            counters["completed"] -= 1
        if epochs["current"]["processed"] > epochs["current"]["completed"]:  # the epoch was closed
            for counters in (epochs["current"], epochs["total"]):
                counters["processed"] -= 1
            loop["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1


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
        if getattr(trainer, "_val_check_time_interval", None) is not None:
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


class GracefulShutdown(L.Callback):
    """On SIGTERM or SIGINT: finish the current optimizer step (and the validation due after it), save
    ``last.ckpt``, stop, and say how to resume. A signal during the final step lets the run finish.

    A second signal stops at once (without a checkpoint). The exit code is 128 + the signal number,
    as a shell reports a process killed by that signal.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, resume_command: str | None = None):
        self.resume_command = resume_command
        self.received: int | None = None
        self.saved_path: Path | None = None
        self._previous: dict = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Here and not earlier: Lightning installs its own SIGTERM handler just before training starts.
        for signum in self.SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame) -> None:
        self.received = signum
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL)
        print(
            f"\n{signal.Signals(signum).name} received: saving a checkpoint after this step "
            "(send it again to stop at once, without one)",
            file=sys.stderr,
            flush=True,
        )

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.received is None or self.saved_path is not None or optimizer_step_pending(trainer):
            return
        if validation_due(trainer):
            return  # saved after it (on_validation_end): a resume would otherwise skip it
        self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
        if fitting and self.received is not None and self.saved_path is None:
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        path = checkpoint_dir(trainer) / "last.ckpt"
        trainer.save_checkpoint(path)
        self.saved_path = path
        if final_step(trainer):
            name = signal.Signals(self.received).name
            print(f"{name} came during the final step: the run is complete", file=sys.stderr, flush=True)
        # Otherwise stop when the next step starts: this step's metrics still reach the loggers.

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if self.saved_path is None:
            return
        name = signal.Signals(self.received).name
        resume = f"; resume with: {self.resume_command}" if self.resume_command else ""
        raise TrainingInterrupted(
            f"{name} at step {trainer.global_step}: checkpoint saved to {self.saved_path}{resume}",
            exit_code=128 + int(self.received),
        )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            # Lightning puts its own original SIGTERM handler back itself; SIGINT is ours to restore.
            if handler is not None and (
                signum == signal.SIGINT or signal.getsignal(signum) == self._on_signal
            ):
                signal.signal(signum, handler)
        self._previous = {}


class ContinueLogs(L.Callback):
    """On resume, drop the CSV rows a killed run logged after its checkpoint: those steps run again."""

    def __init__(self) -> None:
        self._pending = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = bool(trainer.ckpt_path)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if self._pending:  # here, not at on_train_start: the loop sets its logging step when it restarts
            self._pending = False
            from gptlab.loggers import drop_logged_rows_from

            drop_logged_rows_from(trainer.loggers, trainer.fit_loop.epoch_loop._batches_that_stepped)


class SlowStepsForTests(L.Callback):
    """Sleeps after each training step and before each validation when GPTLAB_TEST_SLOW_STEPS is set:
    lets tests kill a run mid-epoch, or between a step and the validation that follows it."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        time.sleep(self.seconds)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            time.sleep(self.seconds)


def resilience_callbacks(resume_command: str | None) -> list[L.Callback]:
    callbacks: list[L.Callback] = [
        ValidationBetweenOptimizerSteps(),
        RngState(),
        ResumeAfterValidation(),
        GracefulShutdown(resume_command),
        ContinueLogs(),
    ]
    if float(os.environ.get(SLOW_STEPS_ENV) or 0) > 0:
        callbacks.append(SlowStepsForTests(float(os.environ[SLOW_STEPS_ENV])))
    return callbacks


def checkpoint_dir(trainer: L.Trainer) -> Path:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        return Path(callback.dirpath)
    return Path(trainer.default_root_dir) / "checkpoints"
