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


def fastest_precision(device_type: str) -> tuple[str, str]:
    """``trainer.precision=auto``: the Trainer precision that trains fastest on ``device_type`` ("cuda",
    "mps" or "cpu"), and why, in a few words.

    bf16-mixed where the device computes bfloat16 natively: CUDA GPUs from Ampere on, and CPUs with
    AVX512-BF16 or AMX (2x to 7x float32 there). Elsewhere 32-true: a CPU without them emulates bf16
    matmuls through float32, many times slower (gptlab.compat.torch), and older GPUs would need float16's
    loss scaling.
    """
    import torch

    if device_type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16-mixed", "this GPU computes bfloat16"
        return "32-true", "this GPU has no bfloat16 arithmetic"
    if device_type == "cpu":
        from gptlab.compat.torch import cpu_computes_bf16

        if cpu_computes_bf16():
            return "bf16-mixed", "this CPU computes bfloat16: AVX512-BF16 or AMX"
        return "32-true", "this CPU has no bfloat16 arithmetic: no AVX512-BF16 or AMX"
    return "32-true", f"the safe choice on {device_type}"
