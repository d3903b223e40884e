"""Every option of every config group composes and instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR, REPO_ROOT
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from gptlab.data.datamodule import TextDataModule
from gptlab.errors import ConfigError
from gptlab.lit_module import build_model
from gptlab.loggers import build_loggers
from gptlab.schedules import build_scheduler
from gptlab.training import build_callbacks, check_accelerator

CONF = REPO_ROOT / "conf"
GROUPS = ["data", "model", "trainer", "optim", "scheduler", "finetune", "logger", "callbacks", "experiment", "debug"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]


def compose_train(tmp_path: Path, *overrides: str):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a run: the job's config does not carry Hydra's own settings
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.data_dir = str(DATA_DIR)
    return cfg


def test_every_group_has_options():
    assert {g for g, _ in OPTIONS} == set(GROUPS)


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(tmp_path, group, option):
    # model=hf_causal_lm needs a source: a pretrained folder (tested in test_finetune.py) or a config.
    tiny_hf = ["model.hf_config={model_type: gpt2, n_embd: 16, n_layer: 1, n_head: 2, n_positions: 64}"]
    cfg = compose_train(tmp_path, f"{group}={option}", *(tiny_hf if option == "hf_causal_lm" else []))
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves

    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, TextDataModule)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    # Our models on the meta device: shapes are checked without allocating (gpt2-xl would take 6 GB and
    # half a minute). transformers' forward reads values, so the (tiny) hf_causal_lm is built for real.
    with torch.device("cpu" if option == "hf_causal_lm" else "meta"):
        model = build_model(model_cfg)
        logits = model(torch.zeros(1, 4, dtype=torch.long))
    vocab_size = model_cfg.get("vocab_size") or model_cfg["hf_config"].get("vocab_size", 50257)
    assert logits.shape == (1, 4, vocab_size)

    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr)
    build_scheduler(optimizer, OmegaConf.to_container(cfg.scheduler, resolve=True), total_steps=100)
    build_loggers(cfg)
    build_callbacks(cfg)
    accelerator = cfg.trainer.accelerator
    if accelerator in ("gpu", "mps") and not _available(accelerator):
        with pytest.raises(ConfigError, match=f"trainer.accelerator={accelerator} but .* use trainer.accelerator=cpu"):
            check_accelerator(accelerator)
    else:
        instantiate(cfg.trainer, logger=False, enable_checkpointing=False)


def _available(accelerator: str) -> bool:
    return torch.cuda.is_available() if accelerator == "gpu" else torch.backends.mps.is_available()


def test_values_travel_by_interpolation(tmp_path):
    cfg = compose_train(tmp_path, "model=decoder", "data=shakespeare_char", "model.context_length=128")
    assert cfg.data.max_length == 128 and cfg.data.stride == 128  # window follows the model's context
    assert cfg.model.vocab_size == 65  # vocabulary follows the data
    assert cfg.callbacks.model_checkpoint.dirpath == f"{tmp_path}/checkpoints"


def test_experiment_overrides_only_what_differs(tmp_path):
    cfg = compose_train(tmp_path, "experiment=verdict_gpt124m")
    assert cfg.data.corpus == "the-verdict" and cfg.model.emb_dim == 768 and cfg.model.context_length == 256
    assert cfg.trainer.gradient_clip_val == 1.0  # untouched defaults stay
