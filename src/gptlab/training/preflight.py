"""Checks of the composed config that need neither torch nor Lightning: a bad value fails in a second,
with one line naming the key and the fix, before anything is built, loaded or written."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from gptlab.checkpoints.paths import check_fresh_run_folder
from gptlab.core.devices import available_gpu
from gptlab.core.errors import ConfigError
from gptlab.core.precisions import FLOAT16, MATMUL_DTYPES

if TYPE_CHECKING:
    from gptlab.checkpoints.reader import ResumeFrom

INT, FLOAT, BOOL = "an integer", "a number", "true or false"
# The type each key must have when it is set (None is allowed where the config allows null).
TYPES: dict[str, str] = {
    "seed": INT,
    "data.batch_size": INT,
    "data.max_length": INT,
    "data.stride": INT,
    "data.val_stride": INT,
    "data.num_workers": INT,
    "data.train_ratio": FLOAT,
    "model.vocab_size": INT,
    "model.context_length": INT,
    "model.emb_dim": INT,
    "model.n_heads": INT,
    "model.n_layers": INT,
    "model.drop_rate": FLOAT,
    "model.qkv_bias": BOOL,
    "model.bias": BOOL,
    "model.tie_weights": BOOL,
    "model.fused_loss": BOOL,
    "model.vocab_pad_multiple": INT,
    "optim.fused": BOOL,
    "compile": BOOL,
    "optim.lr": FLOAT,
    "optim.weight_decay": FLOAT,
    "optim.eps": FLOAT,
    "trainer.max_epochs": INT,
    "trainer.max_steps": INT,
    "trainer.accumulate_grad_batches": INT,
    "trainer.gradient_clip_val": FLOAT,
    "trainer.log_every_n_steps": INT,
    "trainer.detect_anomaly": BOOL,
}


@dataclass(frozen=True)
class Checked:
    """What preflight found out and the run needs: the checkpoint to resume from (read once, here)."""

    resume: ResumeFrom | None = None


def check_config(cfg: DictConfig) -> Checked:
    check_types(cfg)
    check_values(cfg)
    check_precision(cfg)
    resume = None
    output_dir = _get(cfg, "paths.output_dir")
    if output_dir:
        check_output_dir(output_dir)
        check_fresh_run_folder(output_dir, cfg.get("ckpt_path"))
        if cfg.get("ckpt_path") is not None:
            from gptlab.checkpoints.reader import read_resume_checkpoint  # torch, not Lightning

            resume = read_resume_checkpoint(cfg.get("ckpt_path"), output_dir)
    check_corpus(cfg)
    return Checked(resume)


def check_corpus(cfg: DictConfig) -> None:
    """The corpus is there (or fetched) and intact, before the slow imports."""
    corpus, data_dir = _get(cfg, "data.corpus"), _get(cfg, "data.data_dir")
    if corpus and data_dir:
        from gptlab.data.corpora import corpus_path

        corpus_path(corpus, data_dir)


def _get(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=None)


def check_types(cfg: DictConfig) -> None:
    for key, kind in TYPES.items():
        value = _get(cfg, key)
        if value is None:
            continue
        ok = {
            INT: isinstance(value, int) and not isinstance(value, bool),
            FLOAT: isinstance(value, int | float) and not isinstance(value, bool),
            BOOL: isinstance(value, bool),
        }[kind]
        if not ok:
            raise ConfigError(f"{key} must be {kind}, got {value!r}; e.g. {key}={_example(cfg, key, kind)}")


def _example(cfg: DictConfig, key: str, kind: str) -> str:
    return {INT: "1", FLOAT: "0.5", BOOL: "true"}[kind]


def check_values(cfg: DictConfig) -> None:
    emb_dim, n_heads = _get(cfg, "model.emb_dim"), _get(cfg, "model.n_heads")
    if emb_dim is not None and n_heads is not None and (emb_dim < 1 or n_heads < 1 or emb_dim % n_heads):
        from gptlab.models.checks import check_heads_divide, check_positive  # imports torch: only to explain

        check_positive(emb_dim=emb_dim, n_heads=n_heads)
        check_heads_divide(emb_dim, n_heads)
    for key in ("data.max_length", "data.batch_size", "model.context_length", "model.n_layers"):
        if (value := _get(cfg, key)) is not None and value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    for key in ("data.stride", "data.val_stride"):
        if (value := _get(cfg, key)) is not None and value < 1:
            raise ConfigError(f"{key} must be >= 1 (the distance between windows), got {value}; e.g. {key}=1")
    max_length, context = _get(cfg, "data.max_length"), _get(cfg, "model.context_length")
    if max_length and context and max_length > context and not cfg.get("init_from"):
        raise ConfigError(
            f"data.max_length={max_length} is longer than model.context_length={context}; "
            "lower data.max_length or raise model.context_length"
        )
    ratio = _get(cfg, "data.train_ratio")
    if ratio is not None and not 0.0 < ratio < 1.0:
        raise ConfigError(f"data.train_ratio must be strictly between 0 and 1 (e.g. 0.9), got {ratio}")
    if _get(cfg, "trainer.max_steps") == 0:
        raise ConfigError(
            "trainer.max_steps=0 trains nothing; use a positive number, or -1 to use max_epochs"
        )
    if (epochs := _get(cfg, "trainer.max_epochs")) is not None and epochs == 0:
        raise ConfigError("trainer.max_epochs=0 trains nothing; use a positive number")
    if (lr := _get(cfg, "optim.lr")) is not None and lr <= 0:
        raise ConfigError(f"optim.lr must be positive, got {lr}; e.g. optim.lr=3e-4")
    if (wd := _get(cfg, "optim.weight_decay")) is not None and wd < 0:
        raise ConfigError(f"optim.weight_decay must be >= 0, got {wd}")
    if (accumulate := _get(cfg, "trainer.accumulate_grad_batches")) is not None and accumulate < 1:
        raise ConfigError(f"trainer.accumulate_grad_batches must be >= 1, got {accumulate}")
    interval = _get(cfg, "trainer.val_check_interval")
    if accumulate and isinstance(interval, int) and not isinstance(interval, bool) and interval % accumulate:
        raise ConfigError(validation_inside_accumulation(interval, interval, accumulate))


def validation_inside_accumulation(setting: object, every_batches: int, accumulate: int) -> str:
    """Why a validation every ``every_batches`` training batches is refused with accumulation, and what works.

    Such a validation would judge weights half-way through an optimizer step, and its checkpoint cannot
    hold the gradient accumulated so far, so a run resumed from it would not continue exactly.
    """
    lower = max(accumulate, every_batches // accumulate * accumulate)
    return (
        f"trainer.val_check_interval={setting} validates every {every_batches} training batches, inside an "
        f"optimizer step of trainer.accumulate_grad_batches={accumulate} batches (its checkpoint would miss the "
        f"gradient accumulated so far, and a resumed run would differ); validate at step boundaries: "
        f"trainer.val_check_interval={lower} or {lower + accumulate} (a multiple of {accumulate}), or 1.0 (epoch ends)"
    )


def check_precision(cfg: DictConfig) -> None:
    precision = str(_get(cfg, "trainer.precision") or "32-true")
    if precision not in MATMUL_DTYPES:
        raise ConfigError(
            f"trainer.precision={precision} is not a precision Lightning knows; use 32-true, bf16-mixed, "
            "16-mixed (GPU), bf16-true or 64-true"
        )
    accelerator = str(_get(cfg, "trainer.accelerator") or "auto")
    # accelerator=cpu trains on the CPU even where a GPU is present: refuse float16 there too.
    if precision in FLOAT16 and (accelerator == "cpu" or (accelerator == "auto" and available_gpu() is None)):
        raise ConfigError(
            f"trainer.precision={precision} needs a GPU (float16 is not a training precision on CPUs); "
            "on CPU use trainer.precision=bf16-mixed (fast with AMX) or 32-true"
        )


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
