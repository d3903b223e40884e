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
from gptlab.errors import TrainingInterrupted

# Test hook: seconds to sleep after every training step, so a test can kill a tiny run mid-epoch.
SLOW_STEPS_ENV = "GPTLAB_TEST_SLOW_STEPS"


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with an fsynced atomic write and a weights-only, explained read."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict:
        return load_checkpoint_safely(path, map_location=map_location)


class StepCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` optimizer steps, and at no other time.

    Lightning's ModelCheckpoint also writes ``last`` when training ends if it has not written it yet;
    that checkpoint is taken after the epoch is closed, and a run resumed from it skips an epoch.
    Saves at validation and at the end are the job of the other (best / last) checkpoint callback.
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass


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
        if not batches or not epochs or trainer.world_size > 1:
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
    """On SIGTERM or SIGINT: finish the current step, save ``last.ckpt``, stop, and say how to resume.

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
        if self.received is None or self.saved_path is not None:
            return
        if not trainer.is_last_batch and (batch_idx + 1) % trainer.accumulate_grad_batches != 0:
            return  # in the middle of accumulating gradients: save at the next optimizer step
        path = checkpoint_dir(trainer) / "last.ckpt"
        trainer.save_checkpoint(path)
        self.saved_path = path
        # Stop when the next step (or validation) starts: this step's metrics still reach the loggers.

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        self._stop_if_saved(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            self._stop_if_saved(trainer)

    def _stop_if_saved(self, trainer: L.Trainer) -> None:
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
    """Sleeps after each training step when GPTLAB_TEST_SLOW_STEPS is set: lets tests kill a run mid-epoch."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        time.sleep(self.seconds)


def resilience_callbacks(resume_command: str | None) -> list[L.Callback]:
    callbacks: list[L.Callback] = [
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
