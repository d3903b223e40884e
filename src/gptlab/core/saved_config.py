"""A refused command leaves the run folder's saved config as it was.

Hydra writes the command's config into ``<run folder>/.hydra/`` before the command runs. A command refused
in a folder that holds a run (a fresh start where checkpoints are, a second train.py while one trains there,
any mistake met before its work began) overwrote that run's own record: its ``config.yaml`` named the refused
command's model beside checkpoints of another. The files are read as the run starts (a Hydra callback, before
Hydra writes) and put back when the command ends on a user error before it claimed the folder
(:func:`claim_run_folder`: train.py, as training starts).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SAVED_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")

_earlier: dict[Path, bytes | None] = {}  # each saved file of the run folder -> its bytes (None: there was none)


class KeepEarlierSavedConfig(Callback):
    """Reads the run folder's saved config before Hydra overwrites it (hydra.callbacks in conf/hydra/default)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        subdir = config.hydra.output_subdir
        if subdir is None:
            return
        folder = Path(str(config.hydra.run.dir)) / str(subdir)
        if not (folder / "config.yaml").is_file():
            return  # a new run folder: nothing to keep
        for name in SAVED_FILES:
            path = folder / name
            try:
                _earlier[path] = path.read_bytes()
            except OSError:
                _earlier[path] = None


def claim_run_folder() -> None:
    """The command's own config is the folder's now (its work began): nothing to put back."""
    _earlier.clear()


def restore_earlier_saved_config() -> None:
    """Put back the run folder's saved config as it was before this command (called on a user error)."""
    for path, data in _earlier.items():
        with contextlib.suppress(OSError):  # a folder that cannot be written now: the error said why already
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)
    _earlier.clear()
