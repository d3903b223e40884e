"""The training job behind train.py: compose the pieces from the config, fit, validate, report."""

from __future__ import annotations

import contextlib
import math
import shlex
import sys
from datetime import timedelta
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, Timer
from lightning.pytorch.callbacks import ModelSummary as AnyModelSummary
from omegaconf import DictConfig, OmegaConf

from gptlab.checkpoints.compatibility import check_resumable
from gptlab.checkpoints.io import AtomicCheckpointIO
from gptlab.checkpoints.last import LastCheckpoint
from gptlab.compat.hydra import instantiate_config
from gptlab.config.training import as_long_again, max_time_seconds
from gptlab.config.validate import validate_config
from gptlab.core.errors import ConfigError, NoSpaceLeft
from gptlab.core.files import as_no_space_left
from gptlab.core.redaction import scrub_saved_configs
from gptlab.core.saved_config import claim_run_folder
from gptlab.data.window_data import WindowData
from gptlab.data.window_datamodule import as_lightning_data
from gptlab.models.compile import compile_model
from gptlab.models.factory import data_and_start_model, positions_trained
from gptlab.training.callbacks import TextSampleCallback, ValidateAtMaxSteps
from gptlab.training.console import (
    hide_checkpoint_folder_warning,
    hide_lightnings_notes_to_itself,
    hide_lightnings_pytree_deprecation,
    one_console_for_lightning,
)
from gptlab.training.device_settings import training_device
from gptlab.training.distributed import (
    check_nodes,
    end_process_group,
    is_multirun_job,
    launch_ranks_as_single_runs,
)
from gptlab.training.finetune import parameter_summary
from gptlab.training.loggers import (
    build_loggers,
    finish_wandb,
    log_full_config,
    offline_wandb_dirs,
    tensorboard_dirs,
)
from gptlab.training.model_summary import ModelSummary
from gptlab.training.module import LanguageModelModule
from gptlab.training.preflight import Checked, check_config
from gptlab.training.progress import training_progress_bar
from gptlab.training.resume import (
    ContinueLogs,
    ResumeAfterValidation,
    ResumedDataPosition,
    RngState,
    ScheduleChangeWarning,
    ValidationBetweenOptimizerSteps,
    nothing_left_to_train,
)
from gptlab.training.run_folder_lock import release_run_folder
from gptlab.training.shutdown import GracefulShutdown
from gptlab.training.validation_cost import ValidationCostNote


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    configured = [
        instantiate_config(c, f"callbacks.{name}")
        for name, c in (cfg.get("callbacks") or {}).items()
        if c and "_target_" in c
    ]
    return [
        *configured,
        *training_progress_bar(cfg, configured),
        *model_summary(cfg, configured),
        ValidateAtMaxSteps(),
        ValidationCostNote(),
        *resume_callbacks(resume_command(cfg)),
    ]


def model_summary(cfg: DictConfig, configured: list[Callback]) -> list[Callback]:
    """gptlab's summary where the config names none (callbacks=none): Lightning would add its own, whose
    FLOPs column is all zeros (gptlab.training.model_summary)."""
    if not cfg.trainer.get("enable_model_summary", True) or any(isinstance(c, AnyModelSummary) for c in configured):
        return []
    return [ModelSummary(max_depth=1)]


def max_time_as_lightning_takes_it(trainer_cfg: DictConfig) -> dict:
    """trainer.max_time as a timedelta: Lightning's Timer takes a str, a dict or a timedelta, and instantiate
    would hand it {hours: 4} as an OmegaConf DictConfig (an AttributeError inside Lightning)."""
    seconds = max_time_seconds(trainer_cfg.get("max_time"))
    return {} if seconds is None else {"max_time": timedelta(seconds=seconds)}


def resume_callbacks(resume_command: str | None) -> list[Callback]:
    """What makes a run stoppable and exactly resumable (gptlab.training.resume, .shutdown)."""
    callbacks: list[Callback] = [
        ValidationBetweenOptimizerSteps(),
        ResumedDataPosition(),
        ScheduleChangeWarning(),
        RngState(),
        ResumeAfterValidation(),
        GracefulShutdown(resume_command),
        ContinueLogs(),
    ]
    return callbacks


def resume_command(cfg: DictConfig, changes: dict[str, str] | None = None) -> str | None:
    """The command that continues this run in its own folder from its last checkpoint, with ``changes``
    ({key: value}) to its overrides."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    replaced = ("ckpt_path=", "hydra.run.dir=", *(f"{key}=" for key in changes or {}))
    overrides = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+").startswith(replaced)]
    overrides += [f"{key}={value}" for key, value in (changes or {}).items()]
    args = [*overrides, f"hydra.run.dir={cfg.paths.output_dir}", "ckpt_path=last"]
    if is_multirun_job():
        # A sweep's job continues as a single run in its folder; hparams_search= configs switch to MULTIRUN
        # on their own, and without this the command started a new search.
        args.insert(-1, "hydra.mode=RUN")
    return " ".join(["python", Path(sys.argv[0]).name, *map(shlex.quote, args)])


def batches_per_epoch(trainer: L.Trainer, datamodule: WindowData) -> int:
    """Training batches of one rank in one epoch (before trainer.limit_train_batches), the same on every
    rank. The datamodule's setup already refused a split of less than one batch; with several ranks each
    takes only its share of the windows, which Lightning does not check: with no batch it goes on to a
    zero-length run (the cosine schedule then blamed the run length), so it is said here, before fit."""
    windows = len(datamodule.make_train_sampler(0, trainer.world_size))
    batches = windows // datamodule.batch_size
    if batches == 0:
        raise ConfigError(
            f"the train split gives {len(datamodule.train_set)} windows, {windows} for each of "
            f"{trainer.world_size} ranks, fewer than one batch of data.batch_size={datamodule.batch_size} per "
            "rank; lower data.batch_size, data.max_length or data.stride, or use fewer trainer.devices"
        )
    return batches


def check_validation_interval(trainer: L.Trainer, whole: int) -> None:
    """Lightning refuses an integer trainer.val_check_interval longer than an epoch only inside fit, in a
    ValueError traceback (a small corpus, or debug=fast's interval on one): say it first, in one line.
    ``whole``: the training batches of an epoch (:func:`batches_per_epoch`)."""
    interval, limit = trainer.val_check_interval, trainer.limit_train_batches
    if not isinstance(interval, int) or trainer.check_val_every_n_epoch is None:
        return  # a fraction of an epoch, or batches counted across epochs: any value fits
    batches = min(whole, int(limit)) if isinstance(limit, int) else int(whole * limit)
    if 0 < batches < interval:  # no batch at all: Lightning's own line names trainer.limit_train_batches
        cut = f" (trainer.limit_train_batches={limit})" if batches < whole else ""
        raise ConfigError(
            f"trainer.val_check_interval={interval} validates every {interval} training batches, but an epoch "
            f"here has {batches}{cut}; lower it, or set trainer.check_val_every_n_epoch=null to count batches "
            "across epochs"
        )


def train(cfg: DictConfig, checked: Checked | None = None) -> float | None:
    """Train as configured; return the best validation loss (what a Hydra sweeper minimises).

    ``checked``: what preflight's :func:`check_config` returned, when it already ran (train.py runs it
    before importing this module, after the command wrapper checked the schema); else both run here.
    The run folder is this run's until it returns (gptlab.training.run_folder_lock).
    """
    try:
        return _train(cfg, checked)
    finally:
        if cfg.paths.get("output_dir"):
            release_run_folder(cfg.paths.output_dir)  # a sweep's later jobs: the folder may be resumed now


def _train(cfg: DictConfig, checked: Checked | None) -> float | None:
    one_console_for_lightning()
    hide_lightnings_pytree_deprecation()
    hide_lightnings_notes_to_itself()
    if checked is None:
        validate_config(cfg)
        checked = check_config(cfg)
    resume = checked.resume
    if resume:
        hide_checkpoint_folder_warning()
    check_nodes(int(cfg.trainer.get("num_nodes", 1)))  # needs Lightning's cluster environments
    scrub_saved_configs(cfg.paths.output_dir)
    L.seed_everything(cfg.seed, workers=True)
    datamodule, start_model, model_cfg = checked.data, None, checked.model_cfg
    if model_cfg is None:  # a start from weights: loaded now, after the seed (building a model draws from it)
        datamodule, start_model, model_cfg = data_and_start_model(cfg, checked.data)
    datamodule = as_lightning_data(datamodule, cfg.data._target_)
    finetune = OmegaConf.to_container(cfg.finetune, resolve=True) if cfg.get("finetune") else None
    module = LanguageModelModule(
        model=model_cfg,
        tokenizer=datamodule.tokenizer.spec(),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True),
        finetune=finetune,
        base_model=start_model,
        train_window=positions_trained(cfg, datamodule, model_cfg, start_model),
    )
    if finetune and finetune.get("name") != "full":
        print(f"finetune={finetune['name']}: {parameter_summary(module.model)}", flush=True)
    if cfg.get("compile"):
        compile_model(module.model, "cuda" if training_device(cfg) == "cuda" else "cpu")
    if resume:
        check_resumable(resume.path, resume.checkpoint, module.state_dict(), module.hparams.tokenizer)
    launch_ranks_as_single_runs()  # DDP ranks of a multirun job join the job, not a new sweep
    loggers = build_loggers(cfg)
    callbacks = build_callbacks(cfg)
    for callback in callbacks:  # before fit starts DDP's other ranks, which would each print the same error
        if isinstance(callback, TextSampleCallback):
            callback.check_prompt(datamodule.tokenizer)
    trainer: L.Trainer = instantiate_config(
        cfg.trainer, "trainer", logger=loggers or False, callbacks=callbacks, plugins=[AtomicCheckpointIO(resume)],
        **max_time_as_lightning_takes_it(cfg.trainer),
    )
    check_validation_interval(trainer, batches_per_epoch(trainer, datamodule))
    log_full_config(loggers, cfg)

    failed = True
    try:
        claim_run_folder()  # its saved config is this run's now, whatever happens next
        with resumable_when_the_disk_is_full(cfg, trainer):
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume and resume.path, weights_only=True)
        note = nothing_left_to_train(trainer, resume and resume.checkpoint.get("global_step"))
        if note and trainer.is_global_zero:
            print(note, file=sys.stderr, flush=True)
        best = _best_val_loss(trainer, module)
        if cfg.get("validate_after_fit") and _best_checkpoint(trainer) and not best_is_last_validated(trainer, module):
            module.validating_best_checkpoint = True
            trainer.validate(
                module, datamodule=datamodule, ckpt_path=_best_checkpoint(trainer), verbose=False, weights_only=True
            )
        failed = False
    finally:
        sync_dirs = offline_wandb_dirs(loggers)
        finish_wandb(failed)
        end_process_group()  # the next job of a multirun starts its own
    _report(cfg, trainer, best, sync_dirs)
    return best


@contextlib.contextmanager
def resumable_when_the_disk_is_full(cfg: DictConfig, trainer: L.Trainer):
    """A checkpoint or log that did not fit on the disk: the line says which, and how to go on once there is
    room (run again, the run folder would be refused: it holds checkpoints)."""
    try:
        yield
    except Exception as err:
        full = as_no_space_left(err)
        if full is None:
            raise
        saved = [path for path in (_last_checkpoint(trainer), _best_checkpoint(trainer)) if path and Path(path).is_file()]
        command = resume_command(cfg)
        if saved and command:
            way_on = f"free some space, then resume from {saved[0]} with: {command}"
        else:
            way_on = "no checkpoint of this run was saved: free some space (or set hydra.run.dir elsewhere) and start again"
        raise NoSpaceLeft(full.what, way_on) from None


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    """The checkpoint kept for its metric. Lightning's own ModelCheckpoint (callbacks=none: it adds one
    without a monitor) keeps the latest weights: no best one, nothing for validate_after_fit to validate."""
    return _checkpoint_file(trainer, monitored=True)


def _unmonitored_checkpoint(trainer: L.Trainer) -> str | None:
    return _checkpoint_file(trainer, monitored=False)


def _checkpoint_file(trainer: L.Trainer, monitored: bool) -> str | None:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and bool(callback.monitor) == monitored and callback.best_model_path:
        return callback.best_model_path
    return None


def best_is_last_validated(trainer: L.Trainer, module: LanguageModelModule) -> bool:
    """Whether best.ckpt holds the weights the run ended with, just validated: then validating it again
    (validate_after_fit) would compute the very figure the run already logged, work done twice."""
    last, callback = module.last_validation, trainer.checkpoint_callback
    return (
        last is not None
        and last["step"] == trainer.global_step
        and isinstance(callback, ModelCheckpoint)
        and callback.best_model_score is not None
        and float(callback.best_model_score) == last["val/loss"]
    )


def _last_checkpoint(trainer: L.Trainer) -> str | None:
    last = [c for c in trainer.callbacks if isinstance(c, LastCheckpoint) and c.last_model_path]
    return last[0].last_model_path if last else None


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
    if _last_checkpoint(trainer):
        lines.append(f"last checkpoint: {_last_checkpoint(trainer)} (the final weights)")
    if _unmonitored_checkpoint(trainer):
        lines.append(f"checkpoint: {_unmonitored_checkpoint(trainer)} (Lightning's own, of the final weights)")
    lines += [f"wandb (offline): upload with `wandb sync {d}`" for d in sync_dirs]
    lines += [f"tensorboard: view with `tensorboard --logdir {d}`" for d in tensorboard_dirs(trainer.loggers)]
    lines += time_limit_reached(cfg, trainer)
    print("\n".join(lines), flush=True)


def time_limit_reached(cfg: DictConfig, trainer: L.Trainer) -> list[str]:
    """How to train on after trainer.max_time stopped the run: a limit of the whole run (Lightning's Timer),
    so the same command would stop at once (preflight refuses it)."""
    timers = [c for c in trainer.callbacks if isinstance(c, Timer) and c.time_remaining() is not None]
    if not timers or timers[0].time_remaining() > 0:
        return []
    trained = timers[0].time_elapsed()
    command = resume_command(cfg, {"trainer.max_time": as_long_again(trained, cfg.trainer.max_time)})
    return [
        f"stopped by trainer.max_time={cfg.trainer.max_time} after {timedelta(seconds=int(trained))} of training"
        + (f"; to train as long again: {command}" if command else "")
    ]
