"""Learning-rate schedules, stepped once per optimizer step."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from gptlab.core.errors import ConfigError


def resolve_warmup(total_steps: int, warmup_steps: int | None, warmup_ratio: float | None) -> int:
    """Warmup length in steps: ``warmup_steps`` if given, else ``warmup_ratio`` of the run."""
    if warmup_steps is not None:
        return int(warmup_steps)
    return int((warmup_ratio or 0.0) * total_steps)


def cosine_lr(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """The rate of optimizer step ``step`` (0 .. total_steps - 1): linear warmup to ``lr``, then cosine
    decay to ``min_lr``.

    Warmup starts at lr / warmup_steps (not 0, which would waste the first step) and reaches ``lr`` at
    step ``warmup_steps - 1``, the only step at the peak; the decay starts there and the last step,
    ``total_steps - 1``, trains at exactly ``min_lr`` (and so would any step past the end).
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    peak_step = max(warmup_steps - 1, 0)
    decay_steps = max(1, total_steps - 1 - peak_step)
    progress = min(1.0, (step - peak_step) / decay_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def warmup_outlasts_run(cfg: dict, total_steps: float) -> str | None:
    """A warning when the cosine schedule's warmup is as long as the run or longer: the rate rises for the
    whole run (never reaching ``optim.lr`` if longer) and never decays. A warning, not an error: a short smoke
    run (debug=fast) of an experiment with a fixed warmup is legitimate."""
    if cfg.get("name", "cosine") != "cosine" or not math.isfinite(total_steps) or total_steps < 1:
        return None
    warmup = resolve_warmup(int(total_steps), cfg.get("warmup_steps"), cfg.get("warmup_ratio"))
    if warmup < total_steps:
        return None
    short_of_peak = " without reaching optim.lr" if warmup > total_steps else ""
    return (
        f"warning: scheduler.warmup_steps={warmup} is not shorter than the run ({int(total_steps)} optimizer "
        f"steps): the learning rate rises for the whole run{short_of_peak} and never decays; lower "
        "scheduler.warmup_steps or train for more steps"
    )


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: dict, total_steps: int) -> LambdaLR:
    name = cfg.get("name", "cosine")  # cosine or constant (gptlab.config.training.SCHEDULES)
    base_lr = optimizer.param_groups[0]["lr"]
    if name == "constant":
        return LambdaLR(optimizer, lambda step: 1.0)
    if not math.isfinite(total_steps) or total_steps < 1:
        raise ConfigError(
            "the cosine schedule needs a finite run length: set trainer.max_steps or trainer.max_epochs"
        )
    min_lr = cfg.get("min_lr")
    min_lr = 0.1 * base_lr if min_lr is None else min(float(min_lr), base_lr)
    warmup = resolve_warmup(int(total_steps), cfg.get("warmup_steps"), cfg.get("warmup_ratio"))

    def multiplier(step: int) -> float:
        return (
            cosine_lr(step, lr=base_lr, min_lr=min_lr, warmup_steps=warmup, total_steps=total_steps) / base_lr
        )

    return LambdaLR(optimizer, multiplier)
