"""The accelerators this machine has, asked one way, and the one message for a device it lacks.

torch is imported inside the functions: preflight asks before anything slow is loaded, and only when the
answer matters.
"""

from __future__ import annotations

from gptlab.core.errors import ConfigError


def available_gpu() -> str | None:
    """The GPU PyTorch can use here: ``"cuda"``, ``"mps"`` (Apple) or None."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return None


def require_device(kind: str, setting: str, fix: str) -> None:
    """Refuse ``setting`` (e.g. ``trainer.accelerator=gpu``), which asks for a ``kind`` ("cuda" or "mps")
    device, where this machine has none; ``fix`` says what to use instead."""
    import torch

    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting} but PyTorch sees no CUDA GPU (torch {torch.__version__}); {fix}")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{setting} but this machine has no Apple GPU (MPS); {fix}")
