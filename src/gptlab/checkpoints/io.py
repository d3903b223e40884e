"""Lightning's checkpoint IO with an fsynced atomic write and the safe, explained read."""

from __future__ import annotations

from pathlib import Path

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from gptlab.checkpoints.reader import ResumeFrom, load_checkpoint_safely
from gptlab.core.files import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with an fsynced atomic write and a weights-only, explained read.

    ``resume_from``: the checkpoint the run resumes from, already read (and checked); Lightning's request
    for that file gets it instead of a second read.
    """

    def __init__(self, resume_from: ResumeFrom | None = None):
        super().__init__()
        self._resume_from = resume_from

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict:
        resume, self._resume_from = self._resume_from, None  # handed over once, then not kept alive
        if resume is not None and Path(path).resolve() == resume.path.resolve():
            return resume.checkpoint
        return load_checkpoint_safely(path, map_location=map_location)
