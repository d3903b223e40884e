"""The console of a run: Lightning's notes about itself dropped, its notes about the run kept."""

from __future__ import annotations

import logging

import pytest
from trainers import quiet_trainer

from gptlab.compat.lightning import without_unset_anonymous
from gptlab.training.console import hide_lightnings_notes_to_itself


def lightning_notes(caplog, **settings) -> str:
    hide_lightnings_notes_to_itself()
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        quiet_trainer(**settings)
    return "\n".join(record.getMessage() for record in caplog.records)


def test_the_default_batch_limits_are_no_news_but_a_limit_of_one_batch_is(caplog):
    # conf/trainer/default.yaml sets both limits to 1.0: two lines of "100% of the batches" in every run.
    assert "was configured so" not in lightning_notes(caplog, limit_train_batches=1.0, limit_val_batches=1.0)
    assert "1 batch per epoch will be used" in lightning_notes(caplog, limit_train_batches=1)


@pytest.mark.parametrize(("anonymous", "kept"), [(None, False), (True, True)])
def test_wandb_gets_no_anonymous_setting_unless_one_is_asked_for(tmp_path, anonymous, kept):
    # Lightning passed anonymous=None always, and wandb 0.31 warned of it in every run.
    from lightning.pytorch.loggers import WandbLogger

    logger = without_unset_anonymous(WandbLogger(save_dir=str(tmp_path), offline=True, anonymous=anonymous))
    assert ("anonymous" in logger._wandb_init) == kept
