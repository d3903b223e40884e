"""Model FLOPs per token and the peak FLOP/s they are compared against: the two halves of MFU.

MFU (model FLOPs utilisation) = model FLOPs per token x tokens/s / peak FLOP/s. The model FLOPs are the
FLOPs the architecture needs per trained token (PaLM appendix B, as nanoGPT counts them), not the FLOPs
the kernels happen to run, so a faster implementation of the same model shows up as a higher MFU.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from gptlab.core.precisions import MATMUL_DTYPES

# Matmul shapes of the CPU peak measurement: a square one and one shaped like a transformer's
# feed-forward (tokens x width @ width x 4 width); the best of them is the ceiling. A 4096 square, once
# among them, cost 3.9 of the 5.1 seconds every training run spent measuring on a 2-core AVX2 EPYC and
# did not reach higher (149 GFLOP/s against 166 for the 2048 square, run to run noise larger than that);
# the 2048 shapes did not either (105-127 GFLOP/s in 1.9 s, against 111-143 in 0.5-0.8 s for the 1024 ones,
# alternating in one process on a 2-core AVX2 EPYC): on a CPU short products reach the ceiling, and more
# of them in the same time give the best-of more chances on a noisy machine.
PEAK_SHAPES = ((1024, 1024, 1024), (1024, 768, 3072))
# A GPU reaches its ceiling only on large products (an H100 needs thousands of rows per side).
GPU_PEAK_SHAPES = ((4096, 4096, 4096), (8192, 8192, 8192), (8192, 768, 3072))
TRAINING_PEAK_REPEATS = 4  # timings of each shape when a training run measures its CPU's peak

@dataclass(frozen=True)
class FlopsShape:
    """What the FLOP count of a model depends on; ``per_token`` adds the window, which varies by batch."""

    matmul_params: int  # N: every parameter except embedding lookup tables
    attention_blocks: int  # attentions per token path: layers, or 2 x layers with cross-attention
    width: int  # d

    def per_token(self, window: int) -> float:
        # 6 N: a multiply-add (2 FLOPs) per weight forward, twice that backward (input and weight grads).
        # 12 d T per attention: q @ k^T and scores @ v, 2 d T FLOPs each forward per token, x3 with backward.
        return 6.0 * self.matmul_params + 12.0 * self.attention_blocks * self.width * window


def model_flops_per_token(model: nn.Module, window: int) -> float | None:
    """Training FLOPs per token (forward + backward) at context ``window``; None for an unknown model.

    ``model`` may be one of gptlab's models, a transformers causal LM, or anything wrapping one (the
    LightningModule, peft's LoRA, torch.compile).
    """
    shape = flops_shape(model)
    return None if shape is None else shape.per_token(window)


def flops_shape(model: nn.Module) -> FlopsShape | None:
    found = _architecture(model)
    if found is None:
        return None
    core, attention_blocks, width = found
    return FlopsShape(matmul_parameter_count(core), attention_blocks, width)


def matmul_parameter_count(model: nn.Module) -> int:
    """Parameters that are computed with, i.e. all but embedding lookup tables.

    A lookup costs no FLOPs, so the position table never counts. A token table tied to the output head
    (the same Parameter as a Linear's weight) is a matmul there and counts, once: ``parameters()``
    yields a shared Parameter once. A padded head counts all its rows, since they are all computed.

    LoRA (peft): the frozen base weights count like trained ones (6 per parameter) and the adapters are
    counted as the parameters they are. Strictly a frozen weight needs no weight gradient (4 FLOPs, not 6),
    but "model FLOPs" describe the architecture, not what trains, and this keeps MFU comparable with full
    fine-tuning of the same model.
    """
    modules = list(model.modules())
    tables = {id(m.weight) for m in modules if isinstance(m, nn.Embedding)}
    computed = {
        id(p) for m in modules if not isinstance(m, nn.Embedding) for p in m.parameters(recurse=False)
    }
    return sum(p.numel() for p in model.parameters() if id(p) not in tables or id(p) in computed)


def _architecture(model: nn.Module) -> tuple[nn.Module, int, int] | None:
    """(the model itself, attention blocks, width) of the first gptlab model inside ``model``, or of a bare
    transformers model (the benchmark's contender)."""
    from gptlab.models.hf_causal_lm import hf_layers_and_width
    from gptlab.models.language_model import LanguageModel

    # Not loaded: no transformers model can exist. Its modeling module, not the package: torchmetrics imports
    # the package wherever it is installed, and reading its lazy PreTrainedModel would load 0.2 s of modules.
    modeling = sys.modules.get("transformers.modeling_utils")
    for module in model.modules():  # outermost first: past the LightningModule, peft and compile wrappers
        if isinstance(module, LanguageModel):
            shape = module.attention_shape()
        elif modeling is not None and isinstance(module, modeling.PreTrainedModel):
            shape = hf_layers_and_width(module.config)
        else:
            continue
        return None if shape is None else (module, *shape)
    return None


def measure_peak_flops(dtype: torch.dtype, device: str | torch.device = "cpu", repeats: int = 8) -> float:
    """The matmul ceiling on ``device`` in ``dtype``: the best FLOP/s seen over a few GEMM shapes.

    Best-of rather than mean, since a noisy shared machine only ever makes a matmul slower. Takes under a
    second in fp32 on two AVX2 cores (bf16 with AMX is faster still); every training run that logs MFU pays
    it once at start-up. A GPU gets larger shapes, and each timing spans several products, since one takes
    less than a millisecond there and the launch and synchronisation would count as much as the arithmetic.
    """
    device = torch.device(device)
    shapes, products = (GPU_PEAK_SHAPES, 20) if device.type == "cuda" else (PEAK_SHAPES, 1)
    # Its own generator: measuring at setup must not shift the training randomness (dropout, shuffles).
    generator = torch.Generator(device).manual_seed(0)
    best = 0.0
    with torch.no_grad():
        for m, k, n in shapes:
            a = torch.randn(m, k, device=device, generator=generator).to(dtype)
            b = torch.randn(k, n, device=device, generator=generator).to(dtype)
            torch.mm(a, b)  # warm-up: kernel selection, page faults
            for _ in range(repeats):
                _synchronize(device)
                start = time.perf_counter()
                for _ in range(products):
                    torch.mm(a, b)
                _synchronize(device)
                best = max(best, products * 2.0 * m * k * n / (time.perf_counter() - start))
    return best


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(device: torch.device, precision: str, configured_tflops: float | None) -> float | None:
    """Peak FLOP/s of one device for a Trainer ``precision``, or None where it is not known.

    A configured figure wins; GPUs (and TPUs) use Lightning's table of datasheet figures; a CPU is
    measured, since no table covers CPUs and their matmul speed depends on the cores a job gets.
    """
    if configured_tflops is not None:
        return float(configured_tflops) * 1e12
    if str(precision) not in MATMUL_DTYPES:
        return None
    dtype = getattr(torch, MATMUL_DTYPES[str(precision)])
    if device.type in ("cuda", "xla"):
        from lightning.fabric.utilities.throughput import get_available_flops

        available = get_available_flops(device, dtype)
        return None if available is None else float(available)
    if device.type == "cpu":
        # Every run that logs MFU waits for this: 4 timings of each shape found the same peak as 8, within
        # 0.5% (2-core AMD EPYC, fp32: 0.21 s against 0.36-0.41 s). The benchmarks keep 8.
        return measure_peak_flops(dtype, device, repeats=TRAINING_PEAK_REPEATS)
    return None  # e.g. MPS: no table, and a measured figure would not be the GPU's ceiling
