"""Secrets: API keys and tokens reach no config, log, checkpoint or console output (gptlab.core.redaction)."""

from __future__ import annotations

import io
import logging
import os

import pytest
from cli_runner import TINY_RUN, assert_ok, clean_env, run_train
from compose import compose_train
from omegaconf import OmegaConf

from gptlab.core.redaction import (
    MASK,
    RedactingFilter,
    RedactingStream,
    load_dotenv,
    looks_secret,
    redact,
    redact_config,
)

WANDB_KEY = "wandbkey-0123456789abcdef0123456789abcdef"
HF_TOKEN = "hf_PlantedTokenForTheTest0123456789"
DOTENV_SECRET = "dotenv-secret-value-9876543210"


def test_redaction_of_text_configs_streams_and_log_records(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # a short, harmless value is not masked
    assert redact(f"token={HF_TOKEN}!") == f"token={MASK}!"
    config = {"logger": {"api_key": "abc", "notes": f"uses {HF_TOKEN}"}, "lr": 0.1, "x": "false"}
    assert redact_config(config) == {
        "logger": {"api_key": MASK, "notes": f"uses {MASK}"},
        "lr": 0.1,
        "x": "false",
    }
    out = io.StringIO()
    RedactingStream(out).write(f"printing {HF_TOKEN}\n")
    assert out.getvalue() == f"printing {MASK}\n"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key %s", (HF_TOKEN,), None)
    RedactingFilter().filter(record)
    assert HF_TOKEN not in record.getMessage()


@pytest.mark.parametrize(
    "name",
    ["HF_TOKEN", "WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "hubToken", "logger.apiKey", "github_auth"],
)
def test_credential_names_are_secret(name):
    assert looks_secret(name)


@pytest.mark.parametrize(
    "name", ["data.tokenizer", "max_new_tokens", "tokens_seen", "TOKENIZERS_PARALLELISM", "author", "monitor"]
)
def test_settings_that_merely_contain_token_are_not_secret(name):
    assert not looks_secret(name)


@pytest.mark.parametrize("experiment", ["verdict_gpt124m", "shakespeare_char", "finetune_gpt2_shakespeare"])
def test_the_logged_config_keeps_every_ordinary_value(tmp_path, experiment):
    config = OmegaConf.to_container(compose_train(tmp_path, f"experiment={experiment}"), resolve=True)
    assert redact_config(config) == config
    assert config["data"]["tokenizer"] in ("gpt2", "char")
    assert isinstance(config["callbacks"]["text_sample"]["max_new_tokens"], int)


def test_dotenv_values_are_loaded_without_overriding_the_environment(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text(
        f"# comment\nexport MY_SERVICE_SECRET='{DOTENV_SECRET}'\nHF_TOKEN=from-file-0000000\n"
    )
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.delenv("MY_SERVICE_SECRET", raising=False)
    assert load_dotenv(env_file) == ["MY_SERVICE_SECRET", "HF_TOKEN"]
    assert os.environ["MY_SERVICE_SECRET"] == DOTENV_SECRET and os.environ["HF_TOKEN"] == HF_TOKEN


@pytest.mark.e2e
def test_no_secret_reaches_the_run_folder_or_the_console(tmp_path):
    env_file = tmp_path / "secrets.env"
    env_file.write_text(f"MY_SERVICE_SECRET={DOTENV_SECRET}\n")
    env = clean_env(
        WANDB_API_KEY=WANDB_KEY, WANDB_MODE="offline", HF_TOKEN=HF_TOKEN, GPTLAB_DOTENV=str(env_file)
    )
    run_dir = tmp_path / "run"
    # The default wandb logger (offline) plus the CSV copy; the token is also asked for by the config (a path
    # of the user's own: paths takes any key, as a URL with a token in it, say).
    result = run_train(
        run_dir, "model=gpt_tiny", "data=verdict", *TINY_RUN, "+paths.notes=${oc.env:HF_TOKEN}", env=env
    )
    assert_ok(result)
    assert list((run_dir / "wandb").glob("offline-run-*"))
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".ckpt" for p in files) and any(p.name == "config.yaml" for p in files)
    for secret in (WANDB_KEY, HF_TOKEN, DOTENV_SECRET):
        assert secret not in result.stdout + result.stderr
        for path in files:
            assert secret.encode() not in path.read_bytes(), f"{secret[:8]}... found in {path}"
    # The logged config keeps its ordinary values (the CSV logger's copy of what wandb receives).
    logged = OmegaConf.load(run_dir / "csv" / "hparams.yaml")
    assert logged.data.tokenizer == "gpt2" and logged.callbacks.text_sample.max_new_tokens == 8  # debug=fast
    assert logged.paths.notes == MASK
