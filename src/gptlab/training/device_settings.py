"""The trainer's device settings checked against this machine, with torch alone, before Lightning is imported
(seconds sooner): a GPU asked for and missing, float16 or FSDP where the run would be on the CPU, device ids
on the CPU; and trainer.precision=auto made the device's fastest precision."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from gptlab.core.devices import available_gpu, fastest_precision, require_device
from gptlab.core.errors import ConfigError
from gptlab.core.precisions import AUTO_PRECISION, FLOAT16, MATMUL_DTYPES


def check_device_settings(cfg: DictConfig) -> None:
    """Every check below (:func:`choose_precision` is the caller's, once nothing else is refused)."""
    check_accelerator(str(cfg.trainer.get("accelerator", "auto")))
    check_float16_device(cfg)
    check_strategy(cfg)
    check_cpu_devices(cfg)


def training_device(cfg: DictConfig) -> str:
    """"cuda", "mps" or "cpu": what Lightning will train on for ``trainer.accelerator``."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("auto", "gpu"):
        return available_gpu() or "cpu"
    return accelerator if accelerator in ("cuda", "mps") else "cpu"


def check_accelerator(accelerator: str) -> None:
    """Lightning's own message for a missing GPU ("No supported gpu backend found!") names no fix."""
    kind = {"gpu": "cuda", "cuda": "cuda", "mps": "mps"}.get(accelerator)
    if kind:
        require_device(kind, f"trainer.accelerator={accelerator}", "use trainer.accelerator=cpu or auto")


def check_float16_device(cfg: DictConfig) -> None:
    """float16 trains on a GPU only: refused where the run would be on the CPU (accelerator=cpu trains on
    the CPU even where a GPU is present)."""
    precision = str(cfg.trainer.get("precision") or "32-true")
    if precision in FLOAT16 and training_device(cfg) == "cpu":
        raise ConfigError(
            f"trainer.precision={precision} needs a GPU (float16 is not a training precision on CPUs); "
            "on CPU use trainer.precision=bf16-mixed (fast with AMX) or 32-true"
        )


def check_strategy(cfg: DictConfig) -> None:
    """Lightning refuses FSDP off CUDA, in a message Hydra's instantiate wraps in its own: say it first."""
    strategy = cfg.trainer.get("strategy")
    name = str(strategy.get("_target_", "")) if isinstance(strategy, DictConfig) else str(strategy)
    if "fsdp" in name.lower() and training_device(cfg) != "cuda":
        raise ConfigError(
            "trainer.strategy=fsdp (trainer=fsdp) shards the model over CUDA GPUs only (Lightning's FSDP); "
            "on a CPU use trainer=ddp, or one device with trainer.strategy=auto"
        )


def check_cpu_devices(cfg: DictConfig) -> None:
    """On the CPU, trainer.devices counts processes: -1 or a list of ids is refused by Lightning in a
    TypeError that Hydra's instantiate wraps ("Error in call to target ...")."""
    devices = cfg.trainer.get("devices", 1)
    if training_device(cfg) != "cpu" or devices == "auto" or (isinstance(devices, int) and devices > 0):
        return
    raise ConfigError(
        f"trainer.devices={devices} on the CPU: give the number of processes (trainer.devices=2 with "
        "trainer=ddp), or auto"
    )


def choose_precision(cfg: DictConfig) -> None:
    """Replace ``trainer.precision=auto`` by the device's fastest precision, saying which and why; warn, in
    one line, when bf16 was asked for on a CPU that would emulate it (many times slower than float32)."""
    precision, device = str(cfg.trainer.get("precision")), training_device(cfg)
    if precision == AUTO_PRECISION:
        chosen, why = fastest_precision(device)
        cfg.trainer.precision = chosen
        print(f"trainer.precision=auto: {chosen} ({why})", flush=True)
    elif device == "cpu" and MATMUL_DTYPES.get(precision) == "bfloat16" and fastest_precision(device)[0] == "32-true":
        print(
            f"warning: trainer.precision={precision} on a CPU without bfloat16 arithmetic (no AVX512-BF16 or "
            "AMX) runs many times slower than float32; use trainer.precision=auto or 32-true",
            file=sys.stderr,
            flush=True,
        )
