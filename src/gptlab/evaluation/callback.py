"""Evaluation during training: the tasks of eval.py every N validations, logged as ``eval/<task>/<metric>``
to every logger, the last figures also in the wandb run's summary.

    python train.py ... callbacks.eval.every_n_validations=1 'callbacks.eval.tasks={perplexity: {}}'
    python train.py ... callbacks.eval.every_n_validations=2 'callbacks.eval.tasks={lambada: {path: lambada.jsonl}}'

``perplexity`` scores the run's own validation split the standard way (gptlab.evaluation.perplexity) with
windows of the training window, every ``stride`` tokens (default: the window, no overlap); zero-shot tasks read
their files (gptlab.evaluation.tasks). Runs on the model as validation left it (eval mode, no gradients).
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import WandbLogger

from gptlab.core.errors import ConfigError
from gptlab.evaluation.perplexity import score_streams
from gptlab.evaluation.tasks import COUNTS, check_characters, check_tasks, read_tasks, run_task


class EvalCallback(L.Callback):
    def __init__(self, every_n_validations: int = 0, tasks: dict | None = None, stride: int | None = None, batch_size: int = 4):
        if every_n_validations < 0:
            raise ConfigError(f"callbacks.eval.every_n_validations={every_n_validations} must be 0 (off) or more")
        self.every = every_n_validations
        self.tasks = {name: dict(settings or {}) for name, settings in (tasks or {}).items()}
        check_tasks(self.tasks, "callbacks.eval.tasks")
        # Read (and checked) now, before training: a missing or malformed file ended the run at its first
        # evaluation, in every rank.
        self.items = read_tasks(self.tasks, "callbacks.eval.tasks") if self.every else {}
        self.stride, self.batch_size = stride, batch_size
        self.validations = 0
        self.last: dict[str, float] = {}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        check_characters(self.items, self.tasks, pl_module.tokenizer, "callbacks.eval.tasks")

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.every or not self.tasks or trainer.sanity_checking:
            return
        self.validations += 1
        if self.validations % self.every:
            return
        for name, value in self.evaluate(trainer, pl_module).items():
            pl_module.log(name, value, rank_zero_only=True)
            self.last[name] = value

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        datamodule, model = trainer.datamodule, pl_module.model
        window = datamodule.max_length
        figures = {}

        def perplexity() -> dict:
            streams = datamodule.token_streams("val")
            return score_streams(
                model, streams, window, self.stride or window, self.batch_size, pl_module.device,
                datamodule.tokenizer.byte_length,
            ).metrics()

        for name in self.tasks:
            metrics = run_task(
                name, self.items.get(name), model, datamodule.tokenizer, window, self.batch_size, pl_module.device,
                perplexity,
            )
            figures.update({f"eval/{name}/{key}": float(value) for key, value in metrics.items() if key not in COUNTS})
        return figures

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.last or trainer.global_rank != 0:
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(self.last)
