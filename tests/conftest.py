"""Shared test set-up: the corpora folder, the repo root, and a clean environment for subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

import gptlab.core.resolvers  # noqa: F401  (registers the resolvers that conf/ uses)

REPO_ROOT = Path(__file__).resolve().parents[1]
# CI and the README point GPTLAB_DATA_DIR at ../shared/data; fall back to that folder beside the repo.
DATA_DIR = Path(os.environ.get("GPTLAB_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))

# A one-layer GPT with GPT-2's vocabulary: the model config of in-process test checkpoints.
TINY_GPT = {
    "_target_": "gptlab.models.GPT",
    "vocab_size": 50257,
    "context_length": 32,
    "emb_dim": 16,
    "n_heads": 2,
    "n_layers": 1,
    "drop_rate": 0.0,
}

@pytest.fixture(scope="session", autouse=True)
def _token_cache_in_tmp(tmp_path_factory):
    """Token caches of test runs (in-process and subprocesses, which copy os.environ) go to a session
    folder, never the user's ~/.cache."""
    os.environ["GPTLAB_CACHE_DIR"] = str(tmp_path_factory.mktemp("token-cache"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "the-verdict.txt").exists():
        pytest.fail(f"corpora not found in {DATA_DIR}: set GPTLAB_DATA_DIR to the folder holding them")
    return DATA_DIR


@pytest.fixture(scope="session")
def verdict_text(data_dir: Path) -> str:
    return (data_dir / "the-verdict.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def shakespeare_text(data_dir: Path) -> str:
    return (data_dir / "tinyshakespeare.txt").read_text(encoding="utf-8")


def compose_train(tmp_path: Path, *overrides: str):
    """train.py's config as a run composes it, with its run folder in ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a run: the job's config does not carry Hydra's own settings
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.data_dir = str(DATA_DIR)
    return cfg
