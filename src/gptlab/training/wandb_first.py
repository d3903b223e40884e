"""wandb imported before Lightning when the run logs to wandb: ~0.3 s less start-up.

wandb 0.31's start defines some 60 pydantic models (its settings, and the W&B Launch modules that
``wandb.init`` imports to look for staged job inputs). pydantic reads each model's field docstrings and
finds their source through ``inspect.getmodule``, which walks every loaded module each time. After Lightning
(torch, torchmetrics, transformers, scipy: ~6,000 modules) that walk made wandb's import and ``init`` take
1.3 s; imported first, the same two took 1.0 s (2-core AMD EPYC, alternating processes, BENCHMARKS.md).
A run without the wandb logger imports nothing here.
"""

from __future__ import annotations

from contextlib import suppress

from omegaconf import DictConfig

WANDB_LOGGER = "lightning.pytorch.loggers.WandbLogger"


def logs_to_wandb(cfg: DictConfig) -> bool:
    loggers = cfg.get("logger") or {}
    return any(
        logger and str(logger.get("_target_", "")).startswith(("lightning.pytorch.loggers.wandb", WANDB_LOGGER))
        for logger in loggers.values()
    )


def import_wandb_first(cfg: DictConfig) -> None:
    if not logs_to_wandb(cfg):
        return
    import wandb  # noqa: F401

    # What wandb.init imports (wandb_run.py, _detect_and_apply_job_inputs); a later wandb may move it.
    with suppress(ImportError):
        import wandb.sdk.launch.inputs.internal  # noqa: F401
