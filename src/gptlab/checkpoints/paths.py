"""Which checkpoint file a user means: the one resolver behind train.py's, generate.py's and the export's
``ckpt_path``, and the guard that keeps a new run from overwriting an earlier run's checkpoints (plain paths
only, no torch: preflight asks them before anything slow is imported)."""

from __future__ import annotations

from pathlib import Path

from gptlab.core.errors import ConfigError

_EXAMPLE = "e.g. outputs/DATE/TIME/checkpoints/last.ckpt, or its run folder outputs/DATE/TIME"


def checkpoint_file(ckpt_path: str | Path, run_dir: str | Path | None = None) -> Path:
    """The .ckpt file that ``ckpt_path`` names: a file; a run or checkpoints folder, which stands for its
    ``last.ckpt``; or ``last``, the last checkpoint of ``run_dir`` (the run being resumed in place)."""
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
        found = sorted(p.name for p in [*path.glob("*.ckpt"), *path.glob("checkpoints/*.ckpt")])
        hint = f"; it holds {', '.join(found[:5])}: pass one of them" if found else ""
        raise ConfigError(f"folder {path} has no last.ckpt (nor checkpoints/last.ckpt){hint}")
    if not path.is_file():
        raise ConfigError(
            f"ckpt_path={ckpt_path}: checkpoint {path} does not exist or is not a file; "
            f"pass a .ckpt file written by train.py ({_EXAMPLE})"
        )
    return path


def check_fresh_run_folder(run_dir: str | Path, ckpt_path: str | None) -> None:
    """A new run (no ``ckpt_path``) must not overwrite the checkpoints of an earlier run in the same folder."""
    folder = Path(str(run_dir))
    existing = sorted(p.name for p in (folder / "checkpoints").glob("*.ckpt"))
    if existing and not ckpt_path:
        raise ConfigError(
            f"the run folder {folder} already holds checkpoints ({', '.join(existing)}); continue that run with "
            "ckpt_path=last, or start a new one in another folder (leave out hydra.run.dir)"
        )
