"""The model summary printed when a run starts, without Lightning 2.6's FLOPs column.

Lightning counts FLOPs only by running a forward on the module's ``example_input_array``; gptlab's modules
set none (it would be a forward pass, and a compilation under ``compile=true``, before every run), so
Lightning printed "0" in every row and "0  Total Flops": a number that is not true. The FLOPs of a run are
counted by gptlab.models.flops and reported as MFU by the throughput callback.
"""

from __future__ import annotations

import logging

from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary

from gptlab.compat.lightning import summary_table

log = logging.getLogger("lightning.pytorch.callbacks.model_summary")  # where Lightning's table is logged


class ModelSummary(LightningModelSummary):
    @staticmethod
    def summarize(
        summary_data,
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict,
        total_flops: int,
        **summarize_kwargs,
    ) -> None:
        if total_flops:  # a module with an example_input_array: Lightning's own table, FLOPs and all
            LightningModelSummary.summarize(
                summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops
            )
            return
        table = summary_table(summary_data, total_parameters, trainable_parameters, model_size, total_training_modes)
        log.info("\n" + table)
