"""The composed config built into its schemas: every range and cross-key rule runs, in a millisecond."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from gptlab.config.unknown_keys import refuse_added_keys


def validate_config(cfg: DictConfig) -> object:
    """Build the dataclasses of ``cfg`` (their ``__post_init__`` checks raise ConfigError); return them.

    OmegaConf builds a key added with ``+`` into an attribute no code reads, so those are refused first."""
    refuse_added_keys(cfg)
    return OmegaConf.to_object(cfg)
