import math

import lightning as L
import pytest
import torch
from tiny_models import TINY_GPT
from trainers import quiet_trainer

from gptlab.core.errors import ConfigError
from gptlab.data.datamodule import TextDataModule
from gptlab.training.module import LanguageModelModule
from gptlab.training.schedules import build_scheduler, cosine_lr, warmup_outlasts_run


def lrs_of(cfg: dict, total_steps: int, lr: float = 1e-3) -> list[float]:
    """The rate each of the run's optimizer steps uses."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2, 2))], lr=lr)
    scheduler = build_scheduler(optimizer, cfg, total_steps)
    values = []
    for _ in range(total_steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_cosine_values_at_warmup_start_peak_middle_and_end():
    lrs = lrs_of({"name": "cosine", "warmup_steps": 10, "min_lr": 1e-4}, total_steps=110)
    assert lrs[0] == pytest.approx(1e-3 / 10)  # warmup starts at lr / warmup_steps, not at 0
    assert lrs[4] == pytest.approx(1e-3 * 5 / 10)
    assert lrs[9] == pytest.approx(1e-3) and lrs.count(max(lrs)) == 1  # the peak, once, ends the warmup
    assert lrs[59] == pytest.approx((1e-3 + 1e-4) / 2)  # halfway through the 100 decay steps: the midpoint
    assert lrs[109] == pytest.approx(1e-4, rel=1e-9)  # the last step trains at min_lr
    assert all(a > b for a, b in zip(lrs[9:], lrs[10:], strict=False))


def test_warmup_ratio_and_default_min_lr():
    lrs = lrs_of({"name": "cosine", "warmup_ratio": 0.1, "min_lr": None}, total_steps=100)
    assert lrs[9] == pytest.approx(1e-3)
    assert lrs[99] == pytest.approx(1e-4)  # default min_lr: lr / 10


def test_min_lr_never_above_lr():
    assert max(lrs_of({"name": "cosine", "warmup_steps": 0, "min_lr": 1.0}, total_steps=20)) == pytest.approx(1e-3)


def test_constant():
    assert set(lrs_of({"name": "constant"}, total_steps=5)) == {1e-3}


def test_cosine_formula_stays_at_min_lr_after_the_end():
    assert cosine_lr(500, lr=1.0, min_lr=0.1, warmup_steps=0, total_steps=100) == pytest.approx(0.1)
    assert cosine_lr(0, lr=1.0, min_lr=0.0, warmup_steps=0, total_steps=101) == 1.0  # no warmup: step 0 peaks
    assert cosine_lr(50, lr=1.0, min_lr=0.0, warmup_steps=0, total_steps=101) == pytest.approx(0.5)


def test_cosine_needs_a_finite_run():
    with pytest.raises(ConfigError, match="max_steps or trainer.max_epochs"):
        lrs_of({"name": "cosine", "warmup_steps": 1}, total_steps=math.inf)


class RecordRates(L.Callback):
    def __init__(self):
        self.rates: list[float] = []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        self.rates.append(optimizer.param_groups[0]["lr"])


@pytest.mark.parametrize(
    "schedule",
    [{"max_steps": 7, "accumulate_grad_batches": 2}, {"max_steps": -1, "max_epochs": 2, "limit_train_batches": 5}],
    ids=["accumulation", "epochs"],
)
def test_cosine_through_lightning_warms_up_peaks_once_and_ends_at_min_lr(tmp_path, data_dir, schedule):
    recorder = RecordRates()
    module = LanguageModelModule(
        model=TINY_GPT,
        tokenizer={"kind": "gpt2"},
        optim={"lr": 1e-3},
        scheduler={"name": "cosine", "warmup_steps": 3, "min_lr": 1e-4},
    )
    trainer = quiet_trainer(
        limit_val_batches=0,
        default_root_dir=tmp_path,
        callbacks=[recorder],
        **schedule,
    )
    datamodule = TextDataModule(corpus="the-verdict", data_dir=str(data_dir), batch_size=2, max_length=32)
    trainer.fit(module, datamodule=datamodule)
    rates = recorder.rates
    assert len(rates) == trainer.global_step == trainer.estimated_stepping_batches
    assert rates[0] == pytest.approx(1e-3 / 3)
    assert rates[2] == pytest.approx(1e-3) and rates.count(rates[2]) == 1
    assert rates[-1] == pytest.approx(1e-4, rel=1e-9)


def test_a_warmup_as_long_as_the_run_warns_once_with_the_fix(tmp_path, data_dir, capsys):
    # A fixed warmup_steps longer than a (smoke) run: the rate only rises, never reaching optim.lr, and
    # nothing said so.
    module = LanguageModelModule(
        model=TINY_GPT, tokenizer={"kind": "gpt2"}, optim={"lr": 1e-3}, scheduler={"name": "cosine", "warmup_steps": 10}
    )
    trainer = quiet_trainer(limit_val_batches=0, default_root_dir=tmp_path, max_steps=4)
    datamodule = TextDataModule(corpus="the-verdict", data_dir=str(data_dir), batch_size=2, max_length=32)
    trainer.fit(module, datamodule=datamodule)
    err = capsys.readouterr().err
    assert err.count("warning: scheduler.warmup_steps=10 is not shorter than the run (4 optimizer steps)") == 1
    assert "without reaching optim.lr" in err and "lower scheduler.warmup_steps" in err


def test_warmup_warning_only_when_the_warmup_fills_the_run():
    cosine = {"name": "cosine", "warmup_steps": 5}
    assert warmup_outlasts_run(cosine, 6) is None
    assert "never decays" in warmup_outlasts_run(cosine, 5) and "without reaching" not in warmup_outlasts_run(cosine, 5)
    assert "without reaching optim.lr" in warmup_outlasts_run(cosine, 4)
    assert warmup_outlasts_run({"name": "cosine", "warmup_ratio": 0.5}, 10) is None
    assert warmup_outlasts_run({"name": "constant", "warmup_steps": 50}, 10) is None
    assert warmup_outlasts_run(cosine, math.inf) is None  # build_scheduler refuses that run with its own line


def test_a_resume_with_another_schedule_or_rate_says_so_before_its_first_step(tmp_path, capsys):
    # Training on after a finished run (a longer trainer.max_steps) made the rate jump back up the cosine,
    # and a new optim.lr was not used (Lightning restores the checkpoint's base rate): neither was said.
    from compose import compose_train

    from gptlab.training.run import train

    run = ["debug=fast", "logger=csv", "model=gpt_tiny", "data=verdict", "data.batch_size=4", "data.max_length=32"]
    run += ["trainer.accelerator=cpu", "callbacks.text_sample.max_new_tokens=2", "trainer.max_epochs=3"]
    run += ["trainer.limit_train_batches=8"]
    train(compose_train(tmp_path, *run, "trainer.max_steps=2"))
    capsys.readouterr()
    train(compose_train(tmp_path, *run, "trainer.max_steps=4", "optim.lr=1e-3", "ckpt_path=last"))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: optim.lr=0.001 is not used by a resumed run: the checkpoint's schedule, from optim.lr=0.0003, "
        "goes on (Lightning restores it)",
        "warning: this run's learning-rate schedule is not the checkpoint's: at step 2 the rate goes from 3e-05 "
        "to 9.75e-05 (the schedule's length follows trainer.max_steps or trainer.max_epochs; warmup and min_lr "
        "are scheduler.*); resume with the run's own settings to go on with its schedule",
    ]
