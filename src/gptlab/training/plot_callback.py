"""At the end of training, plot the run's loss and perplexity curves into its folder and log them to wandb."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger, WandbLogger


class LossPlotCallback(L.Callback):
    """Writes ``output_file`` (a PNG: loss and perplexity over tokens seen, train and validation).

    The curves come from the run's CSV log, so a resumed run plots its whole history. Rank zero only.
    """

    def __init__(self, output_file: str, wandb_key: str = "loss_curves"):
        self.output_file = Path(output_file)
        self.wandb_key = wandb_key

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if csv_logger is None:
            warnings.warn("no CSV logger (logger=none?): the loss plot is skipped", stacklevel=1)
            return
        csv_logger.save()  # flush the rows still buffered
        metrics_file = Path(csv_logger.experiment.metrics_file_path)
        if not metrics_file.is_file():
            return
        from gptlab.sweeps.plots import (  # matplotlib only when there is something to draw
            plot_run,
            read_curves,
        )

        path = plot_run(read_curves(metrics_file), self.output_file, title=self.output_file.parent.name)
        print(f"loss curves: {path}", flush=True)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=self.wandb_key, images=[str(path)])
