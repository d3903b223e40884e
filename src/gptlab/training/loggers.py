"""Logger set-up: wandb online or offline, one wandb run per job grouped by sweep, always finished."""

from __future__ import annotations

import inspect
import netrc
import os
import re
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from gptlab.compat.hydra import instantiate_config
from gptlab.compat.lightning import AppendingCSVLogger, offline_wandb_started, without_unset_anonymous
from gptlab.compat.wandb import ask_about_data_frames_only_where_pandas_is_loaded
from gptlab.config.unknown_keys import unknown_key_message
from gptlab.core.errors import ConfigError
from gptlab.core.redaction import redact_config


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _hydra_run_identity() -> tuple[str | None, str | None]:
    """(run name, sweep group) from Hydra: multirun jobs are named by their overrides, grouped by sweep."""
    if not HydraConfig.initialized():
        return None, None
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        sweep = Path(hc.sweep.dir)
        group = f"{sweep.parent.name}_{sweep.name}"
        return hc.job.override_dirname or f"job{hc.job.num}", group
    out = Path(hc.runtime.output_dir)
    return f"{out.parent.name}_{out.name}", None


def build_loggers(cfg: DictConfig) -> list[Logger]:
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        if not logger_cfg or "_target_" not in logger_cfg:
            continue
        if name == "wandb":
            check_wandb_keys(logger_cfg)
            logger_cfg = wandb_settings(logger_cfg, resume_run_id(cfg))
        if logger_cfg._target_ in ("lightning.pytorch.loggers.CSVLogger", "lightning.pytorch.loggers.csv_logs.CSVLogger"):
            logger_cfg = logger_cfg.copy()
            logger_cfg._target_ = f"{AppendingCSVLogger.__module__}.AppendingCSVLogger"
        logger = instantiate_config(logger_cfg, f"logger.{name}")
        if isinstance(logger, WandbLogger):
            ask_about_data_frames_only_where_pandas_is_loaded()
            logger = without_unset_anonymous(logger)
        loggers.append(logger)
    return loggers


_WANDB_RUN_DIR = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[a-z0-9]+)$")


def resume_run_id(cfg: DictConfig) -> str | None:
    """The wandb run id of this run folder's earlier run, when resuming in it: the resumed run continues it."""
    if not cfg.get("ckpt_path"):
        return None
    wandb_dir = Path(str(cfg.paths.output_dir)) / "wandb"
    runs = [d for d in wandb_dir.glob("*run-*") if d.is_dir() and _WANDB_RUN_DIR.match(d.name)]
    if not runs:
        return None
    newest = max(runs, key=lambda d: d.stat().st_mtime)
    return _WANDB_RUN_DIR.match(newest.name)["id"]


def check_wandb_keys(logger_cfg: DictConfig) -> None:
    """WandbLogger hands the keys it does not take to wandb.init, which refuses a misspelt one only when
    the run starts (a TypeError traceback after the model is built): check them against both first."""
    takes = set(inspect.signature(WandbLogger).parameters) - {"kwargs"}
    others = [str(key) for key in logger_cfg if key != "_target_" and key not in takes]
    if not others:
        return
    import wandb  # the run imports it anyway; a logger config without such keys need not

    takes |= set(inspect.signature(wandb.init).parameters)
    for key in others:
        if key not in takes:
            raise ConfigError(unknown_key_message(f"logger.wandb.{key}", takes, "WandbLogger or wandb.init"))


def wandb_settings(logger_cfg: DictConfig, run_id: str | None = None) -> DictConfig:
    logger_cfg = logger_cfg.copy()
    run_name, group = _hydra_run_identity()
    with open_dict(logger_cfg):
        logger_cfg.name = logger_cfg.get("name") or run_name
        logger_cfg.group = logger_cfg.get("group") or group
        if run_id and not logger_cfg.get("id"):
            logger_cfg.id = run_id
            logger_cfg.resume = "allow"
        mode = logger_cfg.get("mode") or os.environ.get("WANDB_MODE")
        if mode == "disabled":
            # wandb's own off switch: no run. Forced offline, Lightning set WANDB_MODE=dryrun over it.
            return logger_cfg
        wants_online = not logger_cfg.get("offline") and mode not in ("offline", "dryrun")
        if wants_online and not has_wandb_credentials():
            print("wandb: no API key found (WANDB_API_KEY or `wandb login`): logging offline", flush=True)
            logger_cfg.offline = True
    return logger_cfg


def log_full_config(loggers: list[Logger], cfg: DictConfig) -> None:
    resolved = redact_config(OmegaConf.to_container(cfg, resolve=True))
    for logger in loggers:
        logger.log_hyperparams(resolved)


def offline_wandb_dirs(loggers: list[Logger]) -> list[str]:
    """Folders of offline wandb runs, to pass to `wandb sync`."""
    dirs = []
    for logger in loggers:
        if isinstance(logger, WandbLogger) and offline_wandb_started(logger):
            dirs.append(str(Path(logger.experiment.dir).parent))
    return dirs


def tensorboard_dirs(loggers: list[Logger]) -> list[str]:
    """Folders of the run's TensorBoard event files, to pass to `tensorboard --logdir`."""
    return [str(logger.log_dir) for logger in loggers if isinstance(logger, TensorBoardLogger)]


def finish_wandb(failed: bool) -> None:
    """End the wandb run of this job, so the next job of a multirun starts its own, even after a failure."""
    wandb = sys.modules.get("wandb")  # never imported: no run to end (importing it would cost 0.5 s)
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1 if failed else 0)


def drop_logged_rows_from(loggers: list[Logger], step: int) -> None:
    for logger in loggers:
        if isinstance(logger, AppendingCSVLogger):
            logger.experiment.drop_rows_from(step)
