"""train.py's config composed in-process, as a run composes it."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict
from repo import DATA_DIR, REPO_ROOT

import gptlab.core.resolvers  # noqa: F401  (registers the resolvers that conf/ uses)


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
