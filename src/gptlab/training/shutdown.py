"""A clean stop on SIGTERM / SIGINT: finish the step, save ``last.ckpt``, say how to resume."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from gptlab.checkpoints.last import checkpoint_dir
from gptlab.compat.lightning import optimizer_step_pending, validation_due
from gptlab.core.errors import TrainingInterrupted
from gptlab.training.resume import final_step


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


