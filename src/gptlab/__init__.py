"""gptlab: a Hydra + PyTorch Lightning experiment repo for small GPT-style language models."""

__version__ = "0.1.0"
