"""The groups of the training loop: optim, scheduler, finetune and trainer (Lightning's Trainer arguments)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from gptlab.config.ranges import at_least, fraction, one_of, positive
from gptlab.core.errors import ConfigError
from gptlab.core.precisions import AUTO_PRECISION, MATMUL_DTYPES

# matrices: not biases, LayerNorm or other vectors (GPT-2); all: every parameter (torch's AdamW default).
DECAY_TARGETS = ("matrices", "all")
SCHEDULES = ("cosine", "constant")
FINETUNE_MODES = ("full", "lora")


@dataclass
class OptimConfig:
    """conf/optim/adamw.yaml: AdamW."""

    lr: float = 3.0e-4
    weight_decay: float = 0.1
    decay: str = "matrices"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1.0e-8
    fused: bool | None = None  # null: fused wherever Lightning allows it

    def __post_init__(self) -> None:
        positive("optim.lr", self.lr, "3e-4")
        at_least("optim.weight_decay", self.weight_decay, 0)
        one_of("optim.decay", self.decay, DECAY_TARGETS)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {list(self.betas)}; e.g. [0.9,0.95]")
        positive("optim.eps", self.eps, "1e-8")


@dataclass
class SchedulerConfig:
    """conf/scheduler/: linear warmup then cosine decay to min_lr, or a constant rate."""

    name: str = "cosine"
    warmup_steps: int | None = None  # null: warmup_ratio of the run
    warmup_ratio: float | None = 0.05
    min_lr: float | None = None  # null: optim.lr / 10

    def __post_init__(self) -> None:
        one_of("scheduler.name", self.name, SCHEDULES)
        at_least("scheduler.warmup_steps", self.warmup_steps, 0)
        fraction("scheduler.warmup_ratio", self.warmup_ratio, open_low=False, example=0.05)
        at_least("scheduler.min_lr", self.min_lr, 0)


@dataclass
class FinetuneConfig:
    """conf/finetune/: full (every weight trains) or lora (peft's adapters, base frozen)."""

    name: str = "full"
    rank: int = 16
    alpha: float | None = None  # null: 2 x rank
    dropout: float = 0.0
    # all-linear: the model's own choice (LanguageModel.lora_targets), or a list of module names.
    target_modules: Any = "all-linear"

    def __post_init__(self) -> None:
        one_of("finetune.name", self.name, FINETUNE_MODES)
        at_least("finetune.rank", self.rank, 1)
        fraction("finetune.dropout", self.dropout, open_low=False, example=0.05)


def max_time_seconds(max_time: Any) -> float | None:
    """trainer.max_time in seconds, read as Lightning's Timer reads it (DD:HH:MM:SS, or a dict of timedelta's
    keywords); None when unset. A value Lightning would refuse after the slow imports is refused here."""
    if max_time is None:
        return None
    example = "e.g. trainer.max_time=00:04:00:00 (DD:HH:MM:SS) or 'trainer.max_time={hours: 4}'"
    if isinstance(max_time, str):
        match = re.fullmatch(r"(\d+):(\d\d):(\d\d):(\d\d)", max_time.strip())
        if match:
            days, hours, minutes, seconds = (int(part) for part in match.groups())
            return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds).total_seconds()
    elif isinstance(max_time, Mapping):
        try:
            return timedelta(**dict(max_time)).total_seconds()
        except TypeError:
            pass
    raise ConfigError(f"trainer.max_time={max_time} is not a duration; {example}")


def as_long_again(trained_seconds: float, max_time: Any) -> str:
    """The trainer.max_time that lets a run stopped by it (or past it) train as long again."""
    return duration_text(trained_seconds + max_time_seconds(max_time))


def duration_text(seconds: float) -> str:
    """DD:HH:MM:SS, as trainer.max_time takes it."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{secs:02d}"


@dataclass
class TrainerConfig:
    """conf/trainer/: the Lightning Trainer arguments gptlab sets. Any other Trainer argument can be added
    with ``+trainer.NAME=VALUE``; Lightning checks those itself."""

    OTHER_KEYS_GO_TO: ClassVar[str] = "Lightning's Trainer"  # gptlab.config.unknown_keys
    _target_: str = "lightning.pytorch.Trainer"
    default_root_dir: str | None = None
    accelerator: str = "auto"  # auto | cpu | gpu | mps
    devices: Any = 1  # a count, a list of ids, or auto
    num_nodes: int = 1
    strategy: Any = "auto"  # a name, or a strategy config with _target_ (trainer=ddp, trainer=fsdp)
    precision: Any = "32-true"  # or auto: bf16-mixed where the device computes bf16, else 32-true
    max_epochs: int | None = 1
    max_steps: int = -1
    # Lightning's time limit of the training, DD:HH:MM:SS or {hours: 4}: of the whole run, across resumes.
    max_time: Any = None
    gradient_clip_val: float | None = 1.0
    accumulate_grad_batches: int = 1
    # A float is a fraction of an epoch, an int a number of training batches: both are kept as typed.
    val_check_interval: int | float | None = 1.0
    check_val_every_n_epoch: int | None = 1
    limit_train_batches: int | float | None = 1.0
    limit_val_batches: int | float | None = 1.0
    overfit_batches: int | float = 0.0
    num_sanity_val_steps: int = 2
    log_every_n_steps: int = 10
    deterministic: Any = False  # true, false or "warn"
    detect_anomaly: bool = False
    enable_progress_bar: bool = True

    def __post_init__(self) -> None:
        if str(self.precision) not in MATMUL_DTYPES and str(self.precision) != AUTO_PRECISION:
            raise ConfigError(
                f"trainer.precision={self.precision} is not a precision Lightning knows; use auto, 32-true, "
                "bf16-mixed, 16-mixed (GPU), bf16-true or 64-true"
            )
        if self.max_steps == 0:
            raise ConfigError("trainer.max_steps=0 trains nothing; use a positive number, or -1 to use max_epochs")
        if self.max_epochs == 0:
            raise ConfigError("trainer.max_epochs=0 trains nothing; use a positive number")
        max_time_seconds(self.max_time)
        devices = self.devices
        if isinstance(devices, int) and not isinstance(devices, bool) and (devices == 0 or devices < -1):
            # Lightning's own line for it names no value that works.
            raise ConfigError(
                f"trainer.devices must be a count of at least 1, -1 (every device), auto, or a list of device "
                f"ids, got {devices}; e.g. trainer.devices=1"
            )
        at_least("trainer.num_nodes", self.num_nodes, 1)
        at_least("trainer.accumulate_grad_batches", self.accumulate_grad_batches, 1)
        at_least("trainer.log_every_n_steps", self.log_every_n_steps, 1)
        at_least("trainer.gradient_clip_val", self.gradient_clip_val, 0)
        at_least("trainer.check_val_every_n_epoch", self.check_val_every_n_epoch, 1)
        interval, accumulate = self.val_check_interval, self.accumulate_grad_batches
        if isinstance(interval, float) and not 0.0 < interval <= 1.0:
            raise ConfigError(
                f"trainer.val_check_interval={interval} is a fraction of an epoch, so it must be in (0, 1]; "
                "e.g. trainer.val_check_interval=0.25, or an integer number of training batches (=250)"
            )
        at_least("trainer.val_check_interval", interval if isinstance(interval, int) else None, 1)
        if isinstance(interval, int) and not isinstance(interval, bool) and interval % accumulate:
            raise ConfigError(validation_inside_accumulation(interval, interval, accumulate))


def validation_inside_accumulation(setting: object, every_batches: int, accumulate: int) -> str:
    """Why a validation every ``every_batches`` training batches is refused with accumulation, and what works.

    Such a validation would judge weights half-way through an optimizer step, and its checkpoint cannot
    hold the gradient accumulated so far, so a run resumed from it would not continue exactly. (A fraction
    of an epoch is checked once the epoch's length is known: gptlab.training.resume.)
    """
    lower = max(accumulate, every_batches // accumulate * accumulate)
    return (
        f"trainer.val_check_interval={setting} validates every {every_batches} training batches, inside an "
        f"optimizer step of trainer.accumulate_grad_batches={accumulate} batches (its checkpoint would miss the "
        f"gradient accumulated so far, and a resumed run would differ); validate at step boundaries: "
        f"trainer.val_check_interval={lower} or {lower + accumulate} (a multiple of {accumulate}), or 1.0 (epoch ends)"
    )


# The groups whose every key is an object to build, and what one is called.
BUILT_GROUPS = {"logger": "logger", "callbacks": "callback"}


def check_built_entries(group: str, entries: Any) -> None:
    """Each key of ``logger`` (``callbacks``) is a logger (callback) to build, a ``_target_`` and its settings,
    or null to drop one. A value that is no mapping is a setting put beside them: it was skipped without a
    word (``+logger.default_hp_metric=false``), or ended the run in a TypeError traceback
    (``+callbacks.every_n_epochs=2``)."""
    if not isinstance(entries, Mapping):
        return
    what = BUILT_GROUPS[group]
    built = [name for name, value in entries.items() if isinstance(value, Mapping) and "_target_" in value]
    for name, value in entries.items():
        if value is None or name in built:
            continue
        if isinstance(value, Mapping):
            check_settings_of_a_shipped_entry(group, name)
            continue
        example = f"{group}.{_taker(entries, built, name)}.{name}"
        raise ConfigError(
            f"{group}.{name} is not a {what} (each key of {group} is one: {', '.join(built) or 'none here'}); "
            f"a {what}'s setting goes under its name, e.g. {example}"
        )


# A class to name in the message where a new entry has none.
EXAMPLE_TARGETS = {"logger": "lightning.pytorch.loggers.MLFlowLogger", "callbacks": "lightning.pytorch.callbacks.EarlyStopping"}


def check_settings_of_a_shipped_entry(group: str, name: str) -> None:
    """Settings without a ``_target_`` are those of an entry the configs ship and an option left out (debug=fast
    tunes text_sample, which callbacks=none drops): skipped, as Lightning never sees them. Under any other name
    they are a new entry missing its class (``+callbacks.early_stop={monitor: val/loss, patience: 3}``), which
    was skipped without a word: the run trained without it."""
    shipped = shipped_entry_names(group)
    if shipped is None or name in shipped:
        return
    raise ConfigError(
        f"{group}.{name} has settings but no _target_, so no {BUILT_GROUPS[group]} is built from it; name its "
        f"class, e.g. +{group}.{name}._target_={EXAMPLE_TARGETS[group]} (the configs' own: {', '.join(sorted(shipped))})"
    )


def shipped_entry_names(group: str) -> set[str] | None:
    """The entries that conf/<group>/*.yaml define (in every config folder Hydra searches); None outside a
    Hydra command, where no folder is known."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None
    names: set[str] = set()
    for source in HydraConfig.get().runtime.config_sources:
        if source.schema != "file":
            continue
        for option in sorted(Path(source.path, group).glob("*.yaml")):
            names.update(str(key) for key in OmegaConf.load(option) if key != "defaults")
    return names


def _taker(entries: Mapping, built: list[str], setting: str) -> str:
    """The entry whose class takes ``setting`` (importing the classes: an error's cost only), else the only
    entry there is, else NAME."""
    from gptlab.compat.hydra import takes_argument

    takers = [name for name in built if takes_argument(entries[name].get("_target_"), setting)]
    return takers[0] if takers else built[0] if len(built) == 1 else "NAME"

