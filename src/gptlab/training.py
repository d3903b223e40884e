"""The training job behind train.py: compose the pieces from the config, fit, validate, report."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from gptlab.callbacks import ValidateAtMaxSteps
from gptlab.data.datamodule import TextDataModule
from gptlab.errors import ConfigError
from gptlab.lit_module import LanguageModelModule
from gptlab.loggers import build_loggers, finish_wandb, log_full_config, offline_wandb_dirs


def model_config(cfg: DictConfig, datamodule: TextDataModule) -> dict:
    """The model's constructor arguments as plain data, checked against the data it will see."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    if model_cfg.get("vocab_size") is None:
        model_cfg["vocab_size"] = datamodule.vocab_size
    if model_cfg["vocab_size"] < datamodule.vocab_size:
        raise ConfigError(
            f"model.vocab_size={model_cfg['vocab_size']} is smaller than the tokenizer's "
            f"{datamodule.vocab_size} ids; remove the override or set model.vocab_size={datamodule.vocab_size}"
        )
    if datamodule.max_length > model_cfg["context_length"]:
        raise ConfigError(
            f"data.max_length={datamodule.max_length} is longer than model.context_length="
            f"{model_cfg['context_length']}; lower data.max_length or raise model.context_length"
        )
    return model_cfg


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    configured = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c and "_target_" in c]
    return [*configured, ValidateAtMaxSteps()]


def resume_path(ckpt_path: str | None) -> str | None:
    if ckpt_path is None:
        return None
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path} is not a file; give the path of a .ckpt file to resume from"
        )
    return str(path)


def check_accelerator(accelerator: str) -> None:
    """Lightning's own message for a missing GPU ("No supported gpu backend found!") names no fix."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but PyTorch sees no CUDA GPU (torch {torch.__version__}); "
            "use trainer.accelerator=cpu or auto"
        )
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "trainer.accelerator=mps but this machine has no Apple GPU; use trainer.accelerator=cpu or auto"
        )


def check_trainer(cfg: DictConfig) -> None:
    check_accelerator(str(cfg.trainer.get("accelerator", "auto")))
    if cfg.trainer.get("max_steps", -1) == 0:
        raise ConfigError(
            "trainer.max_steps=0 trains nothing; use a positive number, or -1 to use max_epochs"
        )
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr must be positive, got {cfg.optim.lr}")


def train(cfg: DictConfig) -> float | None:
    """Train as configured; return the best validation loss (what a Hydra sweeper minimises)."""
    check_trainer(cfg)
    L.seed_everything(cfg.seed, workers=True)
    datamodule: TextDataModule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = LanguageModelModule(
        model=model_config(cfg, datamodule),
        tokenizer=datamodule.tokenizer.spec(),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
    )
    loggers = build_loggers(cfg)
    callbacks = build_callbacks(cfg)
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    log_full_config(loggers, cfg)

    failed = True
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_path(cfg.get("ckpt_path")))
        best = _best_val_loss(trainer, module)
        if cfg.get("validate_after_fit") and _best_checkpoint(trainer):
            trainer.validate(module, datamodule=datamodule, ckpt_path="best", verbose=False)
        failed = False
    finally:
        sync_dirs = offline_wandb_dirs(loggers)
        finish_wandb(failed)
    _report(cfg, trainer, best, sync_dirs)
    return best


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
        return callback.best_model_path
    return None


def _best_val_loss(trainer: L.Trainer, module: LanguageModelModule) -> float | None:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_score is not None:
        return float(callback.best_model_score)
    return module.best_val_loss if math.isfinite(module.best_val_loss) else None


def _report(cfg: DictConfig, trainer: L.Trainer, best: float | None, sync_dirs: list[str]) -> None:
    if not trainer.is_global_zero:
        return
    lines = [f"run folder: {cfg.paths.output_dir}"]
    if best is not None:
        lines.append(f"best val/loss: {best:.4f} (val/ppl {math.exp(best):.2f})")
    if _best_checkpoint(trainer):
        lines.append(f"best checkpoint: {_best_checkpoint(trainer)}")
        lines.append(f"last checkpoint: {Path(_best_checkpoint(trainer)).parent / 'last.ckpt'}")
    lines += [f"wandb (offline): upload with `wandb sync {d}`" for d in sync_dirs]
    print("\n".join(lines), flush=True)
