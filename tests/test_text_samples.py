"""The text samples after each validation: the prompt they continue, and the wandb samples table (seen with
`wandb leet` or on the dashboard), which keeps every sample, step by step."""

from __future__ import annotations

import json

import lightning as L
import pytest
from lightning.pytorch.loggers import WandbLogger
from tiny_models import TINY_GPT

from gptlab.core.errors import ConfigError
from gptlab.data.datamodule import TextDataModule
from gptlab.data.tokenizers import CharTokenizer, GPT2Tokenizer
from gptlab.training.callbacks import DEFAULT_PROMPT, TextSampleCallback
from gptlab.training.module import LanguageModelModule


def test_no_prompt_set_continues_the_default_prompt_where_the_vocabulary_has_its_characters(capsys):
    for tokenizer in (GPT2Tokenizer(), CharTokenizer.from_text(DEFAULT_PROMPT + "\n")):
        samples = TextSampleCallback()
        samples.check_prompt(tokenizer)
        assert tokenizer.decode(samples.prompt_ids) == DEFAULT_PROMPT
    assert "note" not in capsys.readouterr().err


def test_a_corpus_without_the_default_prompts_characters_samples_from_a_newline_and_says_so(capsys):
    """A character corpus of your own (here lower case, no "E") used to stop the run before its first step."""
    tokenizer = CharTokenizer.from_text("every effort moves you\n")
    samples = TextSampleCallback()
    samples.check_prompt(tokenizer)
    samples.check_prompt(tokenizer)  # train.py settles it before fit, the callback again as fit starts
    assert tokenizer.decode(samples.prompt_ids) == "\n"
    [note] = capsys.readouterr().err.splitlines()
    assert "the text samples start from '\\n'" in note and "('E')" in note
    assert "callbacks.text_sample.prompt=" in note

    without_newline = CharTokenizer.from_text("every effort")
    samples.check_prompt(without_newline)
    assert without_newline.decode(samples.prompt_ids) == " "  # the vocabulary's first character


def test_a_prompt_set_outside_the_vocabulary_is_refused_naming_the_setting():
    with pytest.raises(ConfigError, match=r"^callbacks.text_sample.prompt='Zoo': characters 'Z' are not in"):
        TextSampleCallback(prompt="Zoo").check_prompt(CharTokenizer.from_text("zoo"))


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
