"""Lightning's checkpoint IO with an fsynced atomic write and the safe, explained read."""

from __future__ import annotations

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from gptlab.checkpoints.reader import load_checkpoint_safely
from gptlab.core.files import atomic_torch_save


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with an fsynced atomic write and a weights-only, explained read."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only: bool | None = None) -> dict:
        return load_checkpoint_safely(path, map_location=map_location)
