"""The wandb samples table (seen with `wandb leet` or on the dashboard) keeps every sample, step by step."""

from __future__ import annotations

import json

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from tiny_models import TINY_GPT

from gptlab.data.datamodule import TextDataModule
from gptlab.training.callbacks import TextSampleCallback
from gptlab.training.module import LanguageModelModule


def test_the_samples_table_grows_by_one_row_per_validation(tmp_path, data_dir, monkeypatch):
    import wandb

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    samples = TextSampleCallback(max_new_tokens=4)
    trainer = L.Trainer(
        accelerator="cpu",
        logger=WandbLogger(project="gptlab-test", save_dir=str(tmp_path), offline=True),
        max_steps=6,
        val_check_interval=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[samples],
    )
    module = LanguageModelModule(model=TINY_GPT, tokenizer={"kind": "gpt2"})
    try:
        trainer.fit(module, datamodule=TextDataModule("the-verdict", data_dir=str(data_dir), batch_size=2, max_length=32))
    finally:
        wandb.finish()
    [run] = (tmp_path / "wandb").glob("offline-run-*")
    tables = sorted(run.glob("files/media/table/samples_*.table.json"), key=lambda p: int(p.name.split("_")[1]))
    latest = json.loads(tables[-1].read_text())
    assert latest["columns"] == ["step", "text"]
    assert [row[0] for row in latest["data"]] == [2, 4, 6]
    assert all(text.startswith("Every effort moves you") for _, text in latest["data"])

    # A resumed run's callback starts from the rows in the checkpoint.
    resumed = TextSampleCallback()
    resumed.load_state_dict(samples.state_dict())
    assert resumed.rows == latest["data"]


def test_wandb_still_knows_a_data_frame_where_pandas_is_loaded():
    # gptlab.compat.wandb asks only where pandas is loaded: a user's own DataFrame is still one.
    import pandas as pd
    import wandb
    from wandb import util

    from gptlab.compat.wandb import ask_about_data_frames_only_where_pandas_is_loaded

    ask_about_data_frames_only_where_pandas_is_loaded()
    patched = util.is_pandas_data_frame
    ask_about_data_frames_only_where_pandas_is_loaded()
    assert util.is_pandas_data_frame is patched and patched.pandas_only_where_loaded  # wrapped once
    assert util.is_pandas_data_frame(pd.DataFrame({"step": [2], "text": ["a"]}))
    assert not util.is_pandas_data_frame(wandb.Table(columns=["step", "text"], data=[[2, "a"]]))
