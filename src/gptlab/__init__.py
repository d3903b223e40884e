"""gptlab: a Hydra + PyTorch Lightning experiment repo for small GPT-style language models."""

__version__ = "0.1.0"

# Before anything imports Lightning: its torchmetrics then skips two imports gptlab never uses (2 s a command).
from gptlab.compat.torchmetrics import import_torchmetrics_lean  # noqa: E402

import_torchmetrics_lean()
