"""Throughput and MFU logged during training: in a real Trainer.fit, and through train.py."""

from __future__ import annotations

import csv

import lightning as L
import pytest
import torch
from cli_runner import TINY_RUN, assert_ok, clean_env, read_metrics, run_train
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from lightning.pytorch.loggers import CSVLogger
from repo import REPO_ROOT
from tiny_models import TINY_GPT
from trainers import quiet_trainer

import gptlab.models.flops as flops
from gptlab.data.datamodule import TextDataModule
from gptlab.models.flops import model_flops_per_token
from gptlab.training.module import LanguageModelModule
from gptlab.training.throughput import ThroughputLogger, readable_metrics

WINDOW = 16
NAMES = ["tokens_per_sec", "samples_per_sec", "tokens_per_sec_per_device", "tflops_per_sec_per_device", "mfu"]
COLUMNS = [f"throughput/{name}" for name in NAMES]


def fit(
    tmp_path, data_dir, callback: ThroughputLogger, validate_after: bool = False
) -> tuple[list[dict], L.LightningModule]:
    datamodule = TextDataModule(corpus="the-verdict", data_dir=str(data_dir), batch_size=2, max_length=WINDOW)
    torch.manual_seed(0)
    module = LanguageModelModule(model=TINY_GPT, tokenizer={"kind": "gpt2"}, optim={"lr": 1e-3})
    trainer = quiet_trainer(
        max_steps=6,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        logger=CSVLogger(tmp_path, name="csv", version=""),
        callbacks=[callback],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=datamodule)
    if validate_after:  # as train.py does: setup runs again, the peak must not be measured again
        trainer.validate(module, datamodule=datamodule, verbose=False)
    with (tmp_path / "csv" / "metrics.csv").open() as f:
        return list(csv.DictReader(f)), module


def values(rows: list[dict], column: str) -> list[float]:
    return [float(r[column]) for r in rows if r.get(column)]


def test_fit_logs_tokens_per_sec_samples_per_sec_and_mfu(tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(flops, "measure_peak_flops", _must_not_measure)  # a configured peak wins
    rows, module = fit(tmp_path, data_dir, ThroughputLogger(peak_tflops=1.0, window_size=2))
    for column in COLUMNS:
        assert values(rows, column), f"{column} not logged"
    logged = [r for r in rows if r.get("throughput/mfu")]
    for row in logged:
        tokens, samples = float(row["throughput/tokens_per_sec"]), float(row["throughput/samples_per_sec"])
        tflops, mfu = float(row["throughput/tflops_per_sec_per_device"]), float(row["throughput/mfu"])
        assert tokens > 0 and samples > 0 and 0 < mfu < 1
        # Rates over the same batches: every sample is WINDOW tokens; one device, so device = job.
        assert tokens == pytest.approx(samples * WINDOW)
        assert tokens == pytest.approx(float(row["throughput/tokens_per_sec_per_device"]))
        # The FLOPs behind MFU are the model's training FLOPs per token at this window.
        assert tflops * 1e12 / tokens == pytest.approx(model_flops_per_token(module, WINDOW))
        assert mfu == pytest.approx(tflops * 1e12 / 1.0e12)
    # Only the training figures, under these names (no "validate|..." or "train|..." columns).
    assert not [k for k in rows[0] if "per_sec" in k and not k.startswith("throughput/")]


def test_cpu_peak_is_measured_once_in_the_precisions_dtype(tmp_path, data_dir, monkeypatch):
    measured = []
    monkeypatch.setattr(
        flops, "measure_peak_flops", lambda dtype, device, repeats: measured.append((dtype, repeats)) or 5e11
    )
    callback = ThroughputLogger(window_size=2)
    rows, _ = fit(tmp_path, data_dir, callback, validate_after=True)
    # Half the benchmarks' 8 timings of each shape: the same peak within 0.5%, 0.2 s sooner (flops.py).
    assert measured == [(torch.float32, 4)]  # trainer precision 32-true; fit and validate share one figure
    assert callback.peak == 5e11
    assert values(rows, "throughput/mfu")


def test_mfu_off_measures_nothing_and_logs_no_mfu(tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(flops, "measure_peak_flops", _must_not_measure)
    rows, _ = fit(tmp_path, data_dir, ThroughputLogger(mfu=False, window_size=2))
    assert values(rows, "throughput/tokens_per_sec")
    assert "throughput/mfu" not in rows[0]


def test_run_too_short_for_one_window_measures_nothing(tmp_path, data_dir, monkeypatch):
    # 6 steps never fill a 20-batch window: no figure could be logged, so the seconds of measuring are saved
    # (smoke runs, and every tiny run of the test suite).
    monkeypatch.setattr(flops, "measure_peak_flops", _must_not_measure)
    rows, _ = fit(tmp_path, data_dir, ThroughputLogger(window_size=20))
    assert not [k for k in rows[0] if k.startswith("throughput/")]


def test_job_figures_are_the_device_rate_times_the_ranks():
    lightning_keys = {
        "device/items_per_sec": 100.0,
        "device/samples_per_sec": 4.0,
        "device/flops_per_sec": 2e12,
        "device/mfu": 0.5,
    }
    assert readable_metrics(lightning_keys, world_size=2) == {
        "throughput/tokens_per_sec": 200.0,
        "throughput/tokens_per_sec_per_device": 100.0,
        "throughput/samples_per_sec": 8.0,
        "throughput/tflops_per_sec_per_device": 2.0,
        "throughput/mfu": 0.5,
    }
    assert readable_metrics({"time": 1.0, "batches": 2, "samples": 4}, world_size=1) == {}  # window not full


def test_callbacks_config_wires_the_logger():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        default = compose("train", overrides=["callbacks=default"])
        none = compose("train", overrides=["callbacks=none"])
    callback = instantiate(default.callbacks.throughput)
    assert isinstance(callback, ThroughputLogger)
    assert callback.peak_tflops is None and callback.mfu  # known GPU figure, or measured on a CPU
    assert not none.callbacks  # callbacks=none: still no callbacks at all


@pytest.mark.e2e
def test_train_py_writes_throughput_to_metrics_csv(tmp_path):
    run_dir = tmp_path / "run"
    overrides = [
        *TINY_RUN,
        "model=gpt_tiny",
        "data=verdict",
        "logger=csv",
        "callbacks.throughput.window_size=2",
        "callbacks.throughput.peak_tflops=1",  # measuring a CPU peak takes seconds; that is tested above
    ]
    result = run_train(run_dir, *overrides, env=clean_env(GPTLAB_CACHE_DIR=str(tmp_path / "cache")))
    assert_ok(result)
    rows = read_metrics(run_dir)
    for column in COLUMNS:
        assert values(rows, column) and all(v > 0 for v in values(rows, column)), column
    assert all(v < 1 for v in values(rows, "throughput/mfu"))


def _must_not_measure(*args, **kwargs):
    raise AssertionError("the peak must not be measured here")
