"""The model summary a run starts with: Lightning's table, without the FLOPs it never counted."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel
from trainers import quiet_trainer

from gptlab.training.model_summary import ModelSummary


def summary_printed(caplog, module: L.LightningModule) -> str:
    trainer = quiet_trainer(enable_model_summary=True, max_steps=1, callbacks=[ModelSummary()])
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.callbacks.model_summary"):
        trainer.fit(module)
    return "\n".join(r.getMessage() for r in caplog.records if "Total params" in r.getMessage())


def test_without_an_example_input_the_table_has_no_flops(caplog):
    # Lightning 2.6 printed a FLOPs column of zeros and "0  Total Flops" for every gptlab run.
    table = summary_printed(caplog, BoringModel())
    assert "Trainable params" in table and "Modules in eval mode" in table
    assert "FLOPs" not in table and "Total Flops" not in table


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_with_an_example_input_lightnings_count_stays(caplog):
    module = BoringModel()
    module.example_input_array = torch.randn(1, 32)
    table = summary_printed(caplog, module)
    assert "FLOPs" in table and "Total Flops" in table and "\n0         Total Flops" not in table
