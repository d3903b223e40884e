"""Which checkpoint file a user means: the one resolver behind train.py's, generate.py's and the export's
``ckpt_path``, and the guard that keeps a new run from overwriting an earlier run's checkpoints (plain paths
only, no torch: preflight asks them before anything slow is imported)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from gptlab.core.errors import ConfigError

_EXAMPLE = "e.g. outputs/DATE/TIME/checkpoints/last.ckpt, or its run folder outputs/DATE/TIME"


def checkpoint_file(ckpt_path: str | Path, run_dir: str | Path | None = None, key: str = "ckpt_path") -> Path:
    """The .ckpt file that ``ckpt_path`` names: a file; a run or checkpoints folder, which stands for its
    ``last.ckpt``; or ``last``, the last checkpoint of ``run_dir`` (the run being resumed in place).
    ``key``: the setting that named it, as the messages say it (train.py's ``init_from`` takes runs too)."""
    if str(ckpt_path) == "last":
        if run_dir is None:
            raise ConfigError(f"ckpt_path=last means this run folder's last checkpoint; here name it ({_EXAMPLE})")
        path = Path(str(run_dir)) / "checkpoints" / "last.ckpt"
        if not path.is_file():
            raise ConfigError(
                f"ckpt_path=last but {path.parent} holds no last.ckpt; to resume a run, name its folder: "
                "ckpt_path=last hydra.run.dir=outputs/DATE/TIME (or give ckpt_path=PATH/TO/FILE.ckpt)"
            )
        return path
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            raise ConfigError(
                f"{path} is a Hugging Face model folder, not a gptlab checkpoint; use init_from={path} instead"
            )
        for candidate in (path / "last.ckpt", path / "checkpoints" / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise ConfigError(f"folder {path} has no last.ckpt (nor checkpoints/last.ckpt){_checkpoints_inside(path, key)}")
    if not path.is_file():
        raise ConfigError(
            f"{key}={ckpt_path}: checkpoint {path} does not exist or is not a file; "
            f"pass a .ckpt file written by train.py ({_EXAMPLE})"
        )
    return path


def names_a_gptlab_checkpoint(value: str) -> bool:
    """Whether ``init_from`` names a checkpoint of train.py (a .ckpt file, or a run or checkpoints folder),
    not pretrained weights (a GPT-2 name or a Hugging Face folder, which holds config.json)."""
    path = Path(value).expanduser()
    if path.is_file():
        return path.suffix == ".ckpt"
    if not path.is_dir() or (path / "config.json").is_file():
        return False
    return any((path / name).exists() for name in ("last.ckpt", "checkpoints", ".hydra"))


def _checkpoints_inside(folder: Path, key: str) -> str:
    """The .ckpt files a folder holds, up to three levels down: Lightning's own ModelCheckpoint (a run with
    callbacks=none) writes LOGGER/checkpoints/epoch=E-step=S.ckpt, whose "=" Hydra reads only in quotes."""
    found = sorted(p for depth in range(4) for p in folder.glob("*/" * depth + "*.ckpt") if p.is_file())
    if not found:
        return ""
    names = ", ".join(str(p.relative_to(folder)) for p in found[:5])
    if len(found) > 1:
        return f"; it holds {names}: pass one of them"
    return f"; it holds {names}: pass it, {path_override(found[0], key)}"


def path_override(path: Path, key: str = "ckpt_path") -> str:
    """``KEY=PATH`` as a shell passes it to Hydra: quoted when Hydra's grammar needs quotes."""
    value = str(path)
    if re.fullmatch(r"[\w/.\-]+", value):
        return f"{key}={value}"
    return shlex.quote(f'{key}="{value}"')


def check_fresh_run_folder(run_dir: str | Path, ckpt_path: str | None) -> None:
    """A new run (no ``ckpt_path``) must not overwrite the checkpoints of an earlier run in the same folder."""
    folder = Path(str(run_dir))
    existing = sorted(p.name for p in (folder / "checkpoints").glob("*.ckpt"))
    if existing and not ckpt_path:
        raise ConfigError(
            f"the run folder {folder} already holds checkpoints ({', '.join(existing)}); continue that run with "
            "ckpt_path=last, or start a new one in another folder (leave out hydra.run.dir)"
        )
