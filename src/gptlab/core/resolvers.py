"""OmegaConf resolvers used by conf/, registered when gptlab's entry points or tests import this."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def repo_root() -> str:
    """The folder holding conf/ and train.py (src/gptlab/core/resolvers.py is three levels below it).

    With a non-editable install there is no such folder next to the package; fall back to the current
    working directory, which is where users run train.py from.
    """
    root = Path(__file__).resolve().parents[3]
    return str(root if (root / "conf").is_dir() else Path.cwd())


def config_groups(command: str) -> str:
    """The config groups of ``command`` for its --help (conf/hydra/help/gptlab.yaml)."""
    from gptlab.config.help import config_groups_help

    return config_groups_help(Path(repo_root()) / "conf", command)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("gptlab.repo_root"):
        OmegaConf.register_new_resolver("gptlab.repo_root", repo_root)
    if not OmegaConf.has_resolver("gptlab.config_groups"):
        OmegaConf.register_new_resolver("gptlab.config_groups", config_groups)


register_resolvers()
