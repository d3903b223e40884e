"""The ``trainer.precision`` values Lightning knows, and the dtype each runs its matmuls in (mixed precision
autocasts them to the low dtype). Names only, no torch: preflight checks them before torch is imported."""

from __future__ import annotations

MATMUL_DTYPES: dict[str, str] = {
    "32-true": "float32",
    "32": "float32",
    "16-mixed": "float16",
    "bf16-mixed": "bfloat16",
    "bf16-true": "bfloat16",
    "16-true": "float16",
    "16": "float16",
    "bf16": "bfloat16",
    "64-true": "float64",
    "64": "float64",
}
# gptlab's own value, not Lightning's: train.py picks the fastest precision of the device it trains on
# (gptlab.core.devices.fastest_precision) before the Trainer sees it.
AUTO_PRECISION = "auto"
# float16 needs a GPU: CPUs do not train in it.
FLOAT16 = tuple(precision for precision, dtype in MATMUL_DTYPES.items() if dtype == "float16")
