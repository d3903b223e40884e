"""Checkpoints written atomically and read without running pickled code.

A checkpoint is written to a temporary file in the same folder, flushed and fsynced, then renamed over
the old one: a crash or a kill at any moment leaves either the previous checkpoint or the new one, never
half a file. Checkpoints are read with ``torch.load(weights_only=True)``, so a file carrying pickled code
(from a stranger, or tampered with) is refused instead of executed.
"""

from __future__ import annotations

import io
import os
import pickle
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import torch

from gptlab.errors import GptlabError

# Test hook: seconds to pause half-way through writing a checkpoint (to kill a run mid-save in tests).
SLOW_SAVE_ENV = "GPTLAB_TEST_SLOW_SAVE"


class CheckpointError(GptlabError):
    """A checkpoint that cannot be used: unreadable, truncated, unsafe or for another model."""


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; give it the usual permissions
        with os.fdopen(fd, "wb") as f:
            pause = float(os.environ.get(SLOW_SAVE_ENV) or 0)
            if pause:
                half = len(data) // 2
                f.write(data[:half])
                f.flush()
                time.sleep(pause)
                f.write(data[half:])
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)  # make the rename itself durable


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(buffer.getvalue(), path)


def load_checkpoint_safely(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with one clear message for each way a file can be unusable."""
    path = Path(path)
    hint = (
        "pass ckpt_path= a .ckpt file written by train.py (e.g. outputs/<date>/<time>/checkpoints/last.ckpt)"
    )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file; {hint}")
    if not os.access(path, os.R_OK):
        raise CheckpointError(
            f"checkpoint {path} cannot be read (permission denied); fix its permissions or {hint}"
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (a crash while it was written?); {hint}")
    try:
        checkpoint = torch.load(path, map_location=map_location or "cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        # "Unsupported global": the file names a Python class or function to run. Anything else the
        # weights-only unpickler rejects (e.g. "Unsupported operand") is bytes that are no checkpoint at all.
        if "Unsupported global" in str(err) or "GLOBAL " in str(err):
            raise CheckpointError(
                f"checkpoint {path} contains pickled Python objects (code), not only weights: refused, since "
                "loading it could run that code; use a checkpoint written by train.py, or re-save the state "
                "dict of a file you trust"
            ) from None
        raise CheckpointError(f"checkpoint {path} is truncated or not a PyTorch checkpoint; use an earlier checkpoint, or {hint}") from None
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a PyTorch checkpoint ({_first_line(err)}); "
            f"use an earlier checkpoint, or {hint}"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (it has no state_dict); {hint}")
    return checkpoint


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
