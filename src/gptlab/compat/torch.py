"""PyTorch's private CPU feature probes, written for torch 2.13 (constraints.txt pins 2.13.0).

torch has no public way to ask whether a CPU computes bfloat16 natively; ``torch.cpu`` keeps its probes
private (``_is_avx512_bf16_supported``, ``_is_amx_tile_supported``, in torch since 2.2). Where a future
torch drops them, the answer is False: gptlab then trains in float32, slower on such CPUs but never wrong.
"""

from __future__ import annotations

import torch


def cpu_computes_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX). Without either,
    oneDNN converts every bf16 product through float32 and a bf16 matmul runs several times slower than a
    float32 one (14x on a 2-core AVX2 EPYC: 1.3 against 17 GFLOP/s at 512x512)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
