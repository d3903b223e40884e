"""last.ckpt holds the state at the end of the run, whatever the validation loss did; best.ckpt the lowest."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from cli_runner import TINY_GPT_RUN, read_metrics
from compose import compose_train
from hydra.utils import instantiate
from tiny_models import TINY_GPT

from gptlab.data.datamodule import TextDataModule
from gptlab.hub.export import export_checkpoint
from gptlab.training.module import LanguageModelModule
from gptlab.training.run import best_is_last_validated


class WorseningModule(LanguageModelModule):
    """Reports a val/loss that rises with every validation: only the first one is ever the best."""

    def validation_step(self, batch, batch_idx: int) -> None:
        self.val_loss.update(torch.tensor(float(self.global_step)))


class ImprovingModule(LanguageModelModule):
    """Reports a val/loss that falls with every validation: the last one is the best."""

    def validation_step(self, batch, batch_idx: int) -> None:
        self.val_loss.update(torch.tensor(100.0 - self.global_step))


def checkpoint(path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


@pytest.mark.parametrize(
    "schedule, final_step, best_step",
    [
        ({"max_steps": 6, "val_check_interval": 2}, 6, 2),
        # Validation every second epoch: the third epoch ends with no validation after it.
        ({"max_epochs": 3, "limit_train_batches": 2, "check_val_every_n_epoch": 2}, 6, 4),
    ],
    ids=["validations-that-do-not-improve", "no-validation-at-the-end"],
)
def test_last_checkpoint_holds_the_final_weights(tmp_path, data_dir, schedule, final_step, best_step):
    module = train_worsening(tmp_path, data_dir, schedule)
    assert module.global_step == final_step

    last = checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert last["global_step"] == final_step
    for name, value in module.state_dict().items():
        assert torch.equal(last["state_dict"][name], value), name
    assert checkpoint(tmp_path / "checkpoints" / "best.ckpt")["global_step"] == best_step


def test_the_model_card_reports_the_validation_of_the_weights_it_ships(tmp_path, data_dir):
    # Validations at steps 2, 4, 6 score 2, 4, 6: best.ckpt is step 2, last.ckpt step 6.
    train_worsening(tmp_path, data_dir, {"max_steps": 6, "val_check_interval": 2})
    best = model_card_of(tmp_path / "checkpoints" / "best.ckpt", tmp_path / "best")
    last = model_card_of(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "last")
    assert "| val/loss at step 2 | 2.0000 |" in best
    assert "| val/loss at step 6 | 6.0000 |" in last and "2.0000" not in last


def test_the_model_card_of_weights_never_validated_says_so(tmp_path, data_dir):
    # One validation, at step 4; last.ckpt holds step 6.
    train_worsening(tmp_path, data_dir, {"max_epochs": 3, "limit_train_batches": 2, "check_val_every_n_epoch": 2})
    last = model_card_of(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "last")
    assert "| val/loss | not measured at step 6; the last validation, at step 4 (other weights), gave 4.0000 |" in last


@pytest.mark.parametrize("module_class, validate_again", [(ImprovingModule, False), (WorseningModule, True)])
def test_the_best_checkpoint_is_validated_again_only_when_it_is_not_the_final_state(
    tmp_path, data_dir, module_class, validate_again
):
    """validate_after_fit reports best.ckpt's loss; when best.ckpt is the state the run just validated at
    its end, that figure is already logged and a second validation would only repeat it."""
    module = train_worsening(tmp_path, data_dir, {"max_steps": 6, "val_check_interval": 2}, module_class)
    assert best_is_last_validated(module.trainer, module) is not validate_again


def model_card_of(ckpt_path, out_dir) -> str:
    return (export_checkpoint(str(ckpt_path), str(out_dir)) / "README.md").read_text()


def train_worsening(tmp_path, data_dir, schedule: dict, module_class=None) -> WorseningModule:
    cfg = compose_train(tmp_path)
    callbacks = [instantiate(cfg.callbacks.model_checkpoint), instantiate(cfg.callbacks.last_checkpoint)]
    datamodule = TextDataModule(corpus="the-verdict", data_dir=str(data_dir), batch_size=2, max_length=32)
    module = (module_class or WorseningModule)(model=TINY_GPT, tokenizer={"kind": "gpt2"}, optim={"lr": 1e-3})
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1,
        callbacks=callbacks,
        **schedule,
    )
    trainer.fit(module, datamodule=datamodule)
    return module


class WearingModule(LanguageModelModule):
    """Its validation loss is the true loss plus 10 for every training step the weights have taken (a buffer,
    so checkpoints keep it): every validation is worse than the one before, and best.ckpt's loss, validated
    again, is the very figure logged when it was saved."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("wear", torch.zeros(()))

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.wear += 1

    def validation_step(self, batch, batch_idx: int) -> None:
        self.val_loss.update(self.loss(batch) + 10 * self.wear)


def test_the_best_checkpoints_second_validation_is_logged_apart_from_the_val_curve(tmp_path, monkeypatch):
    """validate_after_fit validates best.ckpt (step 2) after the run (step 4): its loss is best/val_loss,
    not one more val/loss point after the last one, where charts drew it as the final weights' loss."""
    import gptlab.training.run as run

    monkeypatch.setattr(run, "LanguageModelModule", WearingModule)
    run.train(compose_train(tmp_path, *TINY_GPT_RUN, "logger=csv", "callbacks.text_sample.max_new_tokens=2"))
    rows = read_metrics(tmp_path)
    val = {int(r["step"]): float(r["val/loss"]) for r in rows if r.get("val/loss")}
    best = [float(r["best/val_loss"]) for r in rows if r.get("best/val_loss")]
    last_train_step = max(int(r["step"]) for r in rows if r.get("train/loss"))
    assert sorted(val) == [1, 3] and last_train_step == 3  # Lightning logs step 2's validation at index 1
    assert val[3] > val[1] and best == [pytest.approx(val[1], rel=1e-6)]
    assert [float(r["best/val_ppl"]) for r in rows if r.get("best/val_ppl")] == [pytest.approx(math.exp(best[0]), rel=1e-5)]
