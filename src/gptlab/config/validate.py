"""The composed config built into its schemas: every range and cross-key rule runs, in a millisecond."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


def validate_config(cfg: DictConfig) -> object:
    """Build the dataclasses of ``cfg`` (their ``__post_init__`` checks raise ConfigError); return them."""
    return OmegaConf.to_object(cfg)
