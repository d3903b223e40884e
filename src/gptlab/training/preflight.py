"""What a run checks before anything is built, loaded or written, in a second and without Lightning: the
config's values (by its schemas, gptlab.config), then what only this machine and its files can tell: the
devices asked for (gptlab.training.device_settings), a writable run folder that is not another run's, the
checkpoint to resume from (read once, here) and the data, read and tokenised (a mistake in a corpus is met
here, not after Lightning's import: gptlab.models.factory.read_training_data)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from gptlab.checkpoints.paths import check_fresh_run_folder
from gptlab.config.training import as_long_again, max_time_seconds
from gptlab.core.errors import ConfigError
from gptlab.training.device_settings import check_device_settings, choose_precision
from gptlab.training.run_folder_lock import lock_run_folder

if TYPE_CHECKING:
    from gptlab.checkpoints.reader import ResumeFrom
    from gptlab.data.window_data import WindowData


@dataclass(frozen=True)
class Checked:
    """What preflight found out and the run needs: the checkpoint to resume from (read once, here), the
    data with its tokenizer loaded (its plain class: the run makes it a LightningDataModule) and, for a model
    built from its config, that config, checked against the data, which is then cut into windows too."""

    resume: ResumeFrom | None = None
    data: WindowData | None = None
    model_cfg: dict | None = None


def check_config(cfg: DictConfig) -> Checked:
    # The schema's ranges and cross-key rules ran before (the command wrapper, or train() in process).
    check_device_settings(cfg)  # torch alone
    resume = None
    output_dir = _get(cfg, "paths.output_dir")
    if output_dir:
        check_output_dir(output_dir)
        check_fresh_run_folder(output_dir, cfg.get("ckpt_path"))
        if cfg.get("ckpt_path") is not None:
            from gptlab.checkpoints.reader import read_resume_checkpoint  # torch, not Lightning

            resume = read_resume_checkpoint(cfg.get("ckpt_path"), output_dir)
            check_time_left(_get(cfg, "trainer.max_time"), resume.checkpoint)
    from gptlab.models.factory import data_and_start_model, read_training_data, starts_from_weights  # torch

    data, model_cfg = read_training_data(cfg), None
    if not starts_from_weights(cfg):  # a window longer than the model's, a split shorter than one: said now
        data, _, model_cfg = data_and_start_model(cfg, data)
    choose_precision(cfg)  # says its choice for trainer.precision=auto: once the run will start
    if output_dir:
        # Last: a command refused for its own mistake never waits on, or is refused by, a run going on there.
        lock_run_folder(output_dir)  # held until training ends (gptlab.training.run releases it)
    return Checked(resume, data, model_cfg)


def check_time_left(max_time, checkpoint: dict) -> None:
    """Lightning's Timer counts trainer.max_time over the whole run: its time travels in checkpoints. A run
    resumed past it stopped at once, having trained nothing, without a word of why."""
    limit = max_time_seconds(max_time)
    timer = (checkpoint.get("callbacks") or {}).get("Timer") or {}
    trained = float((timer.get("time_elapsed") or {}).get("train", 0))
    if limit is None or trained < limit:
        return
    spent = timedelta(seconds=int(trained))
    raise ConfigError(
        f"trainer.max_time={max_time} is used up: the run trained for {spent} before this checkpoint, and "
        f"the limit counts the whole run, across resumes; raise it to go on (trainer.max_time="
        f"{as_long_again(trained, max_time)} gives it as long again)"
    )


def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=None)


def check_output_dir(output_dir: str | Path) -> None:
    """The run folder must take files: fail now, not at the first checkpoint, an hour in."""
    folder = Path(output_dir)
    probe = folder / ".write-test"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"cannot write to the run folder {folder} ({err.strerror or err}); fix its permissions or choose "
            "another with hydra.run.dir=PATH"
        ) from None
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"cannot write to the run folder {folder}; choose another with hydra.run.dir=PATH")
