import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, TQDMProgressBar
from omegaconf import OmegaConf
from tiny_models import TINY_GPT
from trainers import quiet_trainer

from gptlab.data.datamodule import TextDataModule
from gptlab.training.module import LanguageModelModule
from gptlab.training.progress import SteadyProgressBar, training_progress_bar


def batches_shown(tmp_path, data_dir, monkeypatch, min_interval_s: float) -> list[int]:
    """The training batches whose end the bar displayed in a run of 6 steps that validates after 3."""
    shown = []
    lightning_update = RichProgressBar.on_train_batch_end

    def recorded(self, trainer, pl_module, outputs, batch, batch_idx):
        shown.append(batch_idx)
        lightning_update(self, trainer, pl_module, outputs, batch, batch_idx)

    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", recorded)
    datamodule = TextDataModule(corpus="the-verdict", data_dir=str(data_dir), batch_size=3, max_length=32)
    torch.manual_seed(0)
    module = LanguageModelModule(model=TINY_GPT, tokenizer={"kind": "gpt2"}, optim={"lr": 1e-3})
    trainer = quiet_trainer(
        default_root_dir=tmp_path,
        max_steps=6,
        val_check_interval=3,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        enable_progress_bar=True,
        callbacks=[SteadyProgressBar(min_interval_s=min_interval_s)],
    )
    trainer.fit(module, datamodule=datamodule)
    return shown


def test_the_bar_skips_updates_within_its_interval_but_shows_the_count_before_validating_and_at_the_end(
    tmp_path, data_dir, monkeypatch
):
    # Lightning's own bar reads every metric again after each batch (0.19 ms of make train's 40 ms step).
    assert batches_shown(tmp_path, data_dir, monkeypatch, min_interval_s=3600) == [0, 2, 5]


def test_the_bar_updates_after_every_batch_when_they_are_slower_than_its_interval(tmp_path, data_dir, monkeypatch):
    assert batches_shown(tmp_path, data_dir, monkeypatch, min_interval_s=0) == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("enabled", "configured", "added"),
    [(True, [], [SteadyProgressBar]), (False, [], []), (True, [TQDMProgressBar()], [])],
    ids=["default", "bar-off", "bar-configured"],
)
def test_train_adds_the_steady_bar_unless_the_config_turns_it_off_or_names_one(enabled, configured, added):
    # Lightning refuses a bar callback with enable_progress_bar=false, and a second bar.
    cfg = OmegaConf.create({"trainer": {"enable_progress_bar": enabled}})
    assert [type(bar) for bar in training_progress_bar(cfg, configured)] == added


def bar_totals(tmp_path, data_dir, monkeypatch, ckpt_path=None, callbacks=(), **settings) -> list[float]:
    """The training bar's total after each batch it showed, in a fit with ``settings``."""
    totals = []
    lightning_update = RichProgressBar.on_train_batch_end

    def recorded(self, trainer, pl_module, outputs, batch, batch_idx):
        lightning_update(self, trainer, pl_module, outputs, batch, batch_idx)
        totals.append(next(task.total for task in self.progress.tasks if task.id == self.train_progress_bar_id))

    monkeypatch.setattr(RichProgressBar, "on_train_batch_end", recorded)
    datamodule = TextDataModule(corpus="the-verdict", data_dir=str(data_dir), batch_size=3, max_length=32)
    module = LanguageModelModule(model=TINY_GPT, tokenizer={"kind": "gpt2"}, optim={"lr": 1e-3})
    trainer = quiet_trainer(
        default_root_dir=tmp_path, max_epochs=1, num_sanity_val_steps=0, limit_val_batches=0,
        enable_progress_bar=True, callbacks=[SteadyProgressBar(min_interval_s=0), *callbacks], **settings,
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=False)
    return totals


def test_the_bars_total_ends_where_max_steps_ends_the_run(tmp_path, data_dir, monkeypatch):
    # `make train` (2,000 steps of an 83,649-batch epoch) showed x/83649 and an hour and twenty minutes left.
    assert bar_totals(tmp_path, data_dir, monkeypatch, max_steps=3) == [3, 3, 3]
    assert bar_totals(tmp_path, data_dir, monkeypatch, max_steps=2, accumulate_grad_batches=2) == [4] * 4
    whole_epoch = bar_totals(tmp_path, data_dir, monkeypatch, limit_train_batches=5)
    assert whole_epoch == [5] * 5  # no max_steps: the epoch's batches, as Lightning counts them
    # Resumed inside the epoch (Lightning makes the bar at its first batch): 2 trained, 2 steps to go.
    every_two = ModelCheckpoint(tmp_path / "ckpts", filename="{step}", every_n_train_steps=2, save_top_k=-1)
    bar_totals(tmp_path, data_dir, monkeypatch, max_steps=4, callbacks=[every_two], enable_checkpointing=True)
    resumed = bar_totals(tmp_path, data_dir, monkeypatch, max_steps=4, ckpt_path=tmp_path / "ckpts" / "step=2.ckpt")
    assert resumed == [4, 4]
