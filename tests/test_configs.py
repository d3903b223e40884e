"""Every option of every config group composes and instantiates."""

from __future__ import annotations

import pytest
import torch
from compose import compose_train
from hydra.utils import instantiate
from omegaconf import OmegaConf
from repo import REPO_ROOT

from gptlab.core.errors import ConfigError
from gptlab.data.window_datamodule import WindowDataModule
from gptlab.models.factory import data_and_start_model
from gptlab.training.device_settings import check_accelerator, choose_precision
from gptlab.training.loggers import build_loggers
from gptlab.training.module import build_model
from gptlab.training.run import build_callbacks
from gptlab.training.schedules import build_scheduler

CONF = REPO_ROOT / "conf"
GROUPS = ["data", "model", "trainer", "optim", "scheduler", "finetune", "logger", "callbacks", "experiment", "debug"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def test_every_group_has_options():
    assert {g for g, _ in OPTIONS} == set(GROUPS)


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(tmp_path, group, option):
    # model=hf_causal_lm needs a source: a pretrained folder (tested in test_finetune.py) or a config.
    tiny_hf = ["model.hf_config={model_type: gpt2, n_embd: 16, n_layer: 1, n_head: 2, n_positions: 64}"]
    cfg = compose_train(tmp_path, f"{group}={option}", *(tiny_hf if option == "hf_causal_lm" else []))
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves

    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, WindowDataModule)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    # Our models on the meta device: shapes are checked without allocating (gpt2-xl would take 6 GB and
    # half a minute). transformers' forward reads values, so the (tiny) hf_causal_lm is built for real.
    if option != "hf_causal_lm":
        model_cfg["vocab_size"] = 50257  # the tokenizer's, filled in by train.py (see the vocabulary tests)
    with torch.device("cpu" if option == "hf_causal_lm" else "meta"):
        model = build_model(model_cfg)
        logits = model(torch.zeros(1, 4, dtype=torch.long))
    assert logits.shape == (1, 4, 50257)

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr)
    build_scheduler(optimizer, OmegaConf.to_container(cfg.scheduler, resolve=True), total_steps=100)
    build_loggers(cfg)
    build_callbacks(cfg)
    accelerator = cfg.trainer.accelerator
    if accelerator in ("gpu", "mps") and not _available(accelerator):
        with pytest.raises(ConfigError, match=f"trainer.accelerator={accelerator} but .* use trainer.accelerator=cpu"):
            check_accelerator(accelerator)
    else:
        # A config for more GPUs than this machine has (trainer=ddp/fsdp on one GPU): the config is under
        # test, not the machine, so it is instantiated with the GPUs there are.
        gpus = torch.cuda.device_count()
        on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0)
        fewer = {"devices": gpus} if on_gpu and isinstance(cfg.trainer.devices, int) and cfg.trainer.devices > gpus else {}
        choose_precision(cfg)  # trainer.precision=auto becomes the machine's precision, as in train.py
        instantiate(cfg.trainer, logger=False, enable_checkpointing=False, **fewer)


def _available(accelerator: str) -> bool:
    return torch.cuda.is_available() if accelerator == "gpu" else torch.backends.mps.is_available()


def test_values_travel_by_interpolation(tmp_path):
    cfg = compose_train(tmp_path, "model=decoder", "data=shakespeare_char")
    assert cfg.callbacks.model_checkpoint.dirpath == f"{tmp_path}/checkpoints"


@pytest.mark.parametrize(
    "overrides, window",
    [([], 256), (["model.context_length=128"], 128), (["data.max_length=64"], 64)],
    ids=["default-256", "shorter-context", "explicit"],
)
def test_the_window_follows_the_model_unless_set(tmp_path, overrides, window):
    cfg = compose_train(tmp_path, "model=decoder", "data=shakespeare_char", *overrides)
    datamodule, _, _ = data_and_start_model(cfg)
    assert datamodule.max_length == datamodule.stride == datamodule.val_stride == window
    assert datamodule.train_set[0][0].shape == (window,)


@pytest.mark.parametrize(
    "overrides",
    [["data=shakespeare_char"], ["data=verdict", "data.tokenizer=char"], ["data=verdict"], ["model=gpt2"]],
    ids=["shakespeare-char", "verdict-char", "verdict-gpt2", "gpt2-shape"],
)
def test_the_model_vocabulary_is_the_tokenizers(tmp_path, overrides, verdict_text, shakespeare_text):
    cfg = compose_train(tmp_path, "model=decoder", *overrides)
    datamodule, _, model_cfg = data_and_start_model(cfg)
    text = shakespeare_text if cfg.data.corpus == "tinyshakespeare" else verdict_text
    expected = len(set(text)) if cfg.data.tokenizer == "char" else 50257
    assert model_cfg["vocab_size"] == datamodule.tokenizer.vocab_size == expected


@pytest.mark.parametrize("vocab_size, words", [(50304, "larger than the gpt2 tokenizer's 50257"), (100, "smaller")])
def test_a_model_vocabulary_other_than_the_tokenizers_is_refused(tmp_path, vocab_size, words):
    cfg = compose_train(tmp_path, "model=gpt_tiny", "data=verdict", f"model.vocab_size={vocab_size}")
    with pytest.raises(ConfigError, match=f"model.vocab_size={vocab_size} .*{words}.*vocab_pad_multiple"):
        data_and_start_model(cfg)


def test_experiment_overrides_only_what_differs(tmp_path):
    cfg = compose_train(tmp_path, "experiment=verdict_gpt124m")
    assert cfg.data.corpus == "the-verdict" and cfg.model.emb_dim == 768 and cfg.model.context_length == 256
    assert cfg.trainer.gradient_clip_val is None and cfg.model.init == "pytorch"  # the book's choices
    assert cfg.trainer.precision == "32-true" and cfg.model.n_layers == 12  # untouched defaults stay


def test_make_trains_samples_fit_its_window_so_they_decode_through_the_kv_cache(tmp_path):
    """Past the window every position shifts and each new character re-runs the whole window (10x the time
    of a cached step); `make train` samples at each of its 8 validations."""
    cfg = compose_train(tmp_path, "experiment=shakespeare_char")
    sample = cfg.callbacks.text_sample
    assert len(sample.prompt) + sample.max_new_tokens <= cfg.data.max_length == cfg.model.context_length


def test_make_train_writes_last_ckpt_at_its_validations_only(tmp_path):
    """Each validation (every 250 steps) already writes last.ckpt; saves in between (the default every 200
    steps) were ten more 34 ms writes in a 2000-step run, for a crash to lose 200 steps instead of 250."""
    cfg = compose_train(tmp_path, "experiment=shakespeare_char")
    every = cfg.callbacks.last_checkpoint.every_n_train_steps
    assert every == 0 or every % cfg.trainer.val_check_interval == 0


@pytest.mark.parametrize(
    "experiment, key, value, typed",
    [
        ("verdict_gpt124m", "seed", 123, 7),
        ("finetune_gpt2_shakespeare", "init_from", "gpt2", "gpt2-medium"),
        ("shakespeare_char_gpu", "compile", True, False),
    ],
)
def test_an_experiments_top_level_values_win_over_train_yaml(tmp_path, experiment, key, value, typed):
    """train.yaml's own keys (seed, init_from, compile, ...) are defaults an experiment can change."""
    assert compose_train(tmp_path, f"experiment={experiment}")[key] == value
    override = f"{key}={str(typed).lower() if isinstance(typed, bool) else typed}"
    assert compose_train(tmp_path, f"experiment={experiment}", override)[key] == typed  # the command line wins
