"""Checkpoints read without running pickled code (torch only: no Lightning, so checks stay fast).

Checkpoints are read with ``torch.load(weights_only=True)``, so a file carrying pickled code (from a
stranger, or tampered with) is refused instead of executed; every other way a file can be unusable gets
its own one-line message.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gptlab.checkpoints.paths import checkpoint_file
from gptlab.core.errors import GptlabError, first_line


class CheckpointError(GptlabError):
    """A checkpoint that cannot be used: unreadable, truncated, unsafe or for another model."""


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
    # Bytes that are no checkpoint make the weights-only unpickler fail in ways that depend on them (an
    # IndexError for a text file such as /etc/passwd): any of them means the same to the user.
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError, IndexError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint {path} is truncated or not a PyTorch checkpoint ({first_line(err)}); "
            f"use an earlier checkpoint, or {hint}"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (it has no state_dict); {hint}")
    return checkpoint


@dataclass(frozen=True)
class ResumeFrom:
    """The checkpoint a run continues from, read once: checked before the slow imports, compared with the
    model, then handed to Lightning (gptlab.checkpoints.io) instead of being read again."""

    path: Path
    checkpoint: dict[str, Any]


def read_resume_checkpoint(ckpt_path: str | None, run_dir: str | Path) -> ResumeFrom | None:
    """The checkpoint named by ``ckpt_path`` (None: a fresh run), read safely. Memory-mapped: its tensors
    are paged in when Lightning copies them into the model, not before."""
    if ckpt_path is None:
        return None
    path = checkpoint_file(ckpt_path, run_dir)
    return ResumeFrom(path, load_checkpoint_safely(path, mmap=True))
