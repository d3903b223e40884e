"""Callbacks that slow a training run down, so a test can kill it at a chosen moment.

Tests add them to a train.py subprocess with a Hydra override (see :func:`slow_overrides`); the
subprocess finds this module through PYTHONPATH. Nothing in gptlab itself knows about them.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.trainer.states import TrainerFn

from gptlab.checkpoints.io import AtomicCheckpointIO
from gptlab.core.files import atomic_write

TESTS_DIR = Path(__file__).resolve().parent


class SlowSteps(L.Callback):
    """Sleeps after each training step and before each validation: lets a test kill a run mid-epoch, or
    between a step and the validation that follows it."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        time.sleep(self.seconds)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            time.sleep(self.seconds)


class _HalfThenPauseIO(AtomicCheckpointIO):
    """The run's own atomic checkpoint write, pausing with half of the file written."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()

        def write_slowly(f) -> None:
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(self.seconds)
            f.write(data[len(data) // 2 :])

        atomic_write(path, write_slowly)


class SlowCheckpointWrites(L.Callback):
    """Every checkpoint write pauses half-way through its temporary file: lets a test kill a run mid-save."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        trainer.strategy.checkpoint_io = _HalfThenPauseIO(self.seconds)


def slow_overrides(steps: float = 0, saves: float = 0) -> list[str]:
    """train.py overrides that add the callbacks above (the subprocess needs :func:`importable_from_tests`)."""
    overrides = []
    if steps:
        overrides.append(f"+callbacks.slow_steps={{_target_:slow_runs.SlowSteps,seconds:{steps}}}")
    if saves:
        overrides.append(f"+callbacks.slow_saves={{_target_:slow_runs.SlowCheckpointWrites,seconds:{saves}}}")
    return overrides


def importable_from_tests(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this folder on PYTHONPATH, so a subprocess can instantiate the callbacks above."""
    paths = [str(TESTS_DIR), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


def checkpoint_step(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True, map_location="cpu")["global_step"])
    except Exception:  # not written yet
        return -1


def wait_for(condition, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(
                f"run ended (exit {process.returncode}) before the test could stop it\n{out[-2000:]}\n{err[-2000:]}"
            )
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("timed out waiting for the run")
        time.sleep(0.05)
