"""Lightning internals gptlab relies on, written for Lightning 2.6.6 (pyproject pins ``>=2.6.6,<2.7``).

Each function names the private attribute it reads and why no public one does the job. An upgrade that
renames one fails here, in one file, not somewhere inside a run.
"""

from __future__ import annotations

import csv
import os

import lightning
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint, ThroughputMonitor
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.trainer.states import RunningStage

from gptlab.compat import warn_if_untested
from gptlab.core.files import atomic_write_bytes, csv_text

WRITTEN_FOR = "2.6.6"
warn_if_untested("lightning", lightning.__version__, WRITTEN_FOR, "exact resume, last.ckpt or the CSV log")


# --- The fit loop's schedule (gptlab.training.resume, gptlab.checkpoints.last) -------------------------
# Checkpoints must follow exactly the rules the training epoch loop runs by; it answers these two
# questions only through private methods.


def optimizer_step_pending(trainer: L.Trainer) -> bool:
    """Whether the batch just trained on left its gradients accumulating for a later optimizer step."""
    return trainer.fit_loop.epoch_loop._should_accumulate()


def validation_due(trainer: L.Trainer) -> bool:
    """Whether a validation runs right after the batch just trained on."""
    return bool(trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher))


def batches_that_stepped(trainer: L.Trainer) -> int:
    """The step index Lightning logs at (its loop's count of batches that stepped the optimizer)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def logs_this_step(trainer: L.Trainer) -> bool:
    """Whether the loggers get this training step's logged values (every ``log_every_n_steps`` batches that
    step, and when the run stops): the logger connector's own rule."""
    return trainer._logger_connector.should_update_logs


def validates_by_time(trainer: L.Trainer) -> bool:
    """Whether ``val_check_interval`` was given as a time (Lightning keeps that setting private)."""
    return getattr(trainer, "_val_check_time_interval", None) is not None


def rewind_to_step_end(checkpoint: dict) -> None:
    """Set the fit loop's counters in ``checkpoint`` to those of the end of its last training step.

    Lightning 2.6 resumes exactly only from a checkpoint taken at the end of a training step; one taken
    after that step's validation, or at an epoch's end, has its batch counters one ahead, and the resumed
    epoch gets a batch too many. Its state-dict layout (``loops.fit_loop``) is private.
    """
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    batches, epochs = loop.get("epoch_loop.batch_progress"), loop.get("epoch_progress")
    if not batches or not epochs:
        return
    current = batches["current"]
    if not current["processed"] or not current["completed"] == current["processed"] == current["ready"]:
        return  # saved at the end of a training step already (or before any)
    for counters in (batches["current"], batches["total"]):
        counters["completed"] -= 1
    if epochs["current"]["processed"] > epochs["current"]["completed"]:  # the epoch was closed
        for counters in (epochs["current"], epochs["total"]):
            counters["processed"] -= 1
        loop["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1


def shift_epoch_batch_count(trainer: L.Trainer, batches: int) -> None:
    """Move the fit loop's count of the current epoch's batches by ``batches``, all of its counters alike
    (their differences are how Lightning tells where a checkpoint was taken). Before the epoch loop runs
    (``on_train_start``): it ends the epoch by this count and tells the data fetcher its last batch by it.
    The loop's progress objects are private."""
    current = trainer.fit_loop.epoch_loop.batch_progress.current
    current.ready += batches
    current.started += batches
    current.processed += batches
    current.completed += batches


# --- The trainer seen from a module or a callback ------------------------------------------------------


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The module's trainer, or None: the public ``module.trainer`` raises when there is none."""
    return module._trainer


class TrainingThroughputMonitor(ThroughputMonitor):
    """ThroughputMonitor with two settings Lightning keeps private: the peak FLOP/s its MFU divides by
    (:meth:`set_peak_flops`, known only once measured at setup) and the names training figures are logged
    under (:meth:`renamed`). Validation is still timed, so its time can be taken out of the training rates,
    but not logged."""

    def set_peak_flops(self, flops: float | None) -> None:
        for throughput in self._throughputs.values():
            throughput.available_flops = flops

    def renamed(self, metrics: dict[str, float], world_size: int) -> dict[str, float]:
        return metrics

    def _compute(self, trainer: L.Trainer, iter_num: int | None = None) -> None:
        # A callback has no public way to log outside LightningModule.log (which would average values
        # into epoch means); Lightning's own ThroughputMonitor goes through the same private connector.
        if trainer.state.stage != RunningStage.TRAINING or not trainer._logger_connector.should_update_logs:
            return
        metrics = self.renamed(self._throughputs[RunningStage.TRAINING].compute(), trainer.world_size)
        if metrics:
            trainer._logger_connector.log_metrics(metrics, step=iter_num)


# --- ModelCheckpoint's own bookkeeping (gptlab.checkpoints.last) ---------------------------------------


def save_last(callback: ModelCheckpoint, trainer: L.Trainer) -> None:
    """Write ``last.ckpt`` the way ModelCheckpoint does (its link/copy logic, its bookkeeping)."""
    callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))


def saving_now_skipped(callback: ModelCheckpoint, trainer: L.Trainer) -> bool:
    """ModelCheckpoint's own refusal to save (sanity check, fast_dev_run, twice at one step)."""
    return callback._should_skip_saving_checkpoint(trainer)


def last_saved_at(callback: ModelCheckpoint) -> int | None:
    """The global step of the callback's last save of ``last.ckpt``, None before any."""
    return callback._last_global_step_saved if callback._last_checkpoint_saved else None


# --- Loggers -----------------------------------------------------------------------------------------


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv (in a private method); this one appends to
    it, so a resumed run continues the same file."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(csv.DictReader(f).fieldnames or [])

    def drop_rows_from(self, step: int) -> None:
        """Forget rows logged at ``step`` or later: steps a killed run did after its last checkpoint."""
        self.metrics = [m for m in self.metrics if m.get("step", 0) < step]
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], list(reader)
        kept = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
        if len(kept) < len(rows):
            atomic_write_bytes(csv_text(fields, kept).encode(), self.metrics_file_path)


class AppendingCSVLogger(CSVLogger):
    """CSVLogger that keeps the metrics already in its folder, so a resumed run continues the same file."""

    @property
    @rank_zero_experiment  # as Lightning's own: other ranks (another node's run folder) get no csv/ folder
    def experiment(self) -> _AppendingWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def without_unset_anonymous(logger: WandbLogger) -> WandbLogger:
    """Lightning 2.6 hands wandb.init ``anonymous=None`` whatever the config, and wandb 0.31 warns of any
    value given ("The anonymous setting has no effect and will be removed") in every run. Left out when
    not set; Lightning keeps its wandb.init arguments in the private ``_wandb_init``."""
    if logger._wandb_init.get("anonymous", False) is None:
        del logger._wandb_init["anonymous"]
    return logger


def offline_wandb_started(logger: WandbLogger) -> bool:
    """Whether an offline wandb run was started (asking ``logger.experiment`` would start one)."""
    return bool(logger._offline) and logger._experiment is not None


# --- DDP launch (gptlab.training.distributed) ----------------------------------------------------------


def set_rank_command(rank_command) -> None:
    """Make Lightning's subprocess launchers start ranks 1..N-1 with ``rank_command(local_rank)``.

    Lightning re-runs a Hydra app's command line for each rank, which in a multirun is the whole sweep
    (Lightning issue #15689, open). Its launchers build that command in ``_hydra_subprocess_cmd``; the
    Trainer's launcher imported Fabric's function by name, so both modules are patched. Idempotent.
    """
    from lightning.fabric.strategies.launchers import subprocess_script as fabric_launcher
    from lightning.pytorch.strategies.launchers import subprocess_script as trainer_launcher

    for launcher in (fabric_launcher, trainer_launcher):
        if not hasattr(launcher, "_hydra_subprocess_cmd"):
            raise RuntimeError(f"{launcher.__name__} has no _hydra_subprocess_cmd: update gptlab.compat.lightning")
        launcher._hydra_subprocess_cmd = rank_command


# --- The model summary table (gptlab.training.model_summary) -------------------------------------------


def summary_table(
    summary_data, total_parameters: int, trainable_parameters: int, model_size: float, training_modes: dict
) -> str:
    """Lightning's summary table without its FLOPs: ``_format_summary_table`` is the only formatter of the
    table (the callback's ``summarize`` logs it at once), and it always ends with a "Total Flops" line."""
    from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

    columns = [column for column in summary_data if column[0] != "FLOPs"]
    table = _format_summary_table(total_parameters, trainable_parameters, model_size, training_modes, 0, *columns)
    return table.rsplit("\n", 1)[0]  # its last line: "0  Total Flops"
