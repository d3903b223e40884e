"""Training that goes wrong: a non-finite loss stops the run at once, keeps the last good checkpoint,
says what to try, and exits non-zero; gradient norms are logged and zero gradients are reported."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import pytest
import torch
from cli_runner import TINY_RUN, read_metrics, run_train
from tiny_models import tiny_gpt_config

from gptlab.training.module import LanguageModelModule

TINY_GPT = tiny_gpt_config(vocab_size=16, context_length=8, emb_dim=8)


@pytest.mark.e2e
def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    # A learning rate of a million without clipping: the first step wrecks the weights, the second loss is NaN.
    result = run_train(
        run_dir,
        "model=gpt_tiny",
        "data=verdict",
        *TINY_RUN,
        "logger=csv",
        "optim.lr=1e6",
        "scheduler=constant",
        "trainer.gradient_clip_val=null",
        "callbacks.last_checkpoint.every_n_train_steps=1",
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert "train/loss is nan at step 1" in line
    assert "Lower optim.lr" in line and "gradient_clip_val" in line
    assert f"the last checkpoint, {run_dir / 'checkpoints' / 'last.ckpt'}, is kept" in line
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 1  # the step before the NaN, not overwritten afterwards
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows if r.get("train/loss")] == ["0"]  # nothing logged for the NaN step
    assert math.isfinite(float(rows[0]["grad_norm"]))


class FakeTrainer:
    precision = "32-true"
    precision_plugin = None  # no loss scaling
    strategy = None  # one process, nothing sharded
    global_step = 5
    max_steps = -1
    _logger_connector = SimpleNamespace(should_update_logs=True)  # Lightning's rule: this step is logged
    callbacks: list = []


def module_with_grads(value: float) -> LanguageModelModule:
    module = LanguageModelModule(model=TINY_GPT, tokenizer={"kind": "gpt2"})
    for p in module.parameters():
        p.grad = torch.full_like(p, value)
    module.log = lambda *args, **kwargs: None
    module._trainer = FakeTrainer()
    return module


def test_zero_gradients_are_reported_once():
    module = module_with_grads(0.0)
    with pytest.warns(UserWarning, match="all gradients are zero"):
        module.on_before_optimizer_step(optimizer=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module.on_before_optimizer_step(optimizer=None)
    assert not caught  # once per run, not every step


def test_non_finite_gradients_stop_before_the_optimizer_step():
    from gptlab.core.errors import TrainingDiverged

    module = module_with_grads(float("inf"))
    with pytest.raises(TrainingDiverged, match="gradient norm is inf") as stopped:
        module.on_before_optimizer_step(optimizer=None)
    # A run that diverges before its first save said "the last checkpoint is kept" of a file never written.
    assert "no checkpoint was saved before it" in str(stopped.value)


def test_the_checkpoint_a_diverged_run_keeps_is_named_only_once_written(tmp_path):
    from gptlab.checkpoints.last import LastCheckpoint, kept_checkpoint

    last = LastCheckpoint(dirpath=str(tmp_path))
    trainer = SimpleNamespace(callbacks=[last])
    assert kept_checkpoint(trainer) == "no checkpoint was saved before it"
    last.last_model_path = str(tmp_path / "last.ckpt")  # restored from a checkpoint, the file since deleted
    assert kept_checkpoint(trainer) == "no checkpoint was saved before it"
    (tmp_path / "last.ckpt").write_bytes(b"saved")
    assert kept_checkpoint(trainer) == f"the last checkpoint, {tmp_path / 'last.ckpt'}, is kept (weights from before this step)"
