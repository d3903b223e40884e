"""A refused command leaves the run folder's saved config as it was.

Hydra writes the command's config into ``<run folder>/.hydra/`` before the command runs. A command refused
in a folder that holds a run (a fresh start where checkpoints are, a second train.py while one trains there,
any mistake met before its work began) overwrote that run's own record: its ``config.yaml`` named the refused
command's model beside checkpoints of another. The files are read as the run starts (a Hydra callback, before
Hydra writes) and put back when the command ends on a user error before it claimed the folder
(:func:`claim_run_folder`: train.py, as training starts).

A command that works in a run folder without being its run (eval.py with ``hydra.run.dir=<a training run>``,
to keep its results beside the run's) puts the run's record back whatever its outcome
(:func:`put_back_another_commands_record`), and reads the run's config as the run left it
(:func:`saved_config_text`): it read its own, just written, and scored eval.yaml's default data as "the
run's own".
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SAVED_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")

_earlier: dict[Path, bytes | None] = {}  # each saved file of the run folder -> its bytes (None: there was none)
_written_here: dict[str, Path | str] = {}  # "folder": the saved-config folder this command's Hydra writes; "job": its name


class KeepEarlierSavedConfig(Callback):
    """Reads the run folder's saved config before Hydra overwrites it (hydra.callbacks in conf/hydra/default)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        subdir = config.hydra.output_subdir
        if subdir is None:
            return
        folder = Path(os.path.abspath(Path(str(config.hydra.run.dir)) / str(subdir)))
        _written_here.update(folder=folder, job=str(config.hydra.job.name))
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


def saved_config_text(path: str | Path) -> str | None:
    """A run's saved config file (``.hydra/config.yaml``) as the run left it: where this command's Hydra
    wrote over it, what it held before (None where it held nothing); else the file as it is (None if none)."""
    path = Path(os.path.abspath(path))
    if path.parent == _written_here.get("folder"):
        data = _earlier.get(path)
        return None if data is None else data.decode("utf-8")
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def put_back_another_commands_record() -> None:
    """Put the run folder's saved config back where another command wrote it (train.py's run, whose record
    it is), whatever this command's outcome; this command's own record stays where the folder held none or
    held its own kind's (an eval.py run again in its folder)."""
    earlier = next((data for path, data in _earlier.items() if path.name == "hydra.yaml"), None)
    if earlier is None:
        return
    try:
        job = yaml.safe_load(earlier)["hydra"]["job"]["name"]
    except (yaml.YAMLError, KeyError, TypeError):
        job = None  # unreadable: not this command's either
    if job != _written_here.get("job"):
        restore_earlier_saved_config()
