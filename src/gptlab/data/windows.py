"""Sliding windows over one token stream: inputs are tokens [i, i+L), targets are [i+1, i+L+1).

The stream is held once as a tensor; a window is a slice of it, never a stored copy.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from gptlab.errors import ConfigError, DataError


def count_windows(num_tokens: int, max_length: int, stride: int) -> int:
    """Number of windows: starts 0, stride, 2*stride, ... while a full window plus its target fits."""
    if num_tokens <= max_length:
        return 0
    return (num_tokens - max_length - 1) // stride + 1


class TokenWindows(Dataset):
    def __init__(self, tokens: torch.Tensor, max_length: int, stride: int, split: str = "train"):
        if max_length < 1:
            raise ConfigError(f"data.max_length must be >= 1, got {max_length}")
        if stride < 1:
            raise ConfigError(f"data.stride must be >= 1, got {stride}")
        self.tokens = tokens
        self.max_length = max_length
        self.stride = stride
        self.num_windows = count_windows(len(tokens), max_length, stride)
        if self.num_windows == 0:
            raise DataError(
                f"the {split} split has {len(tokens)} tokens, fewer than one window needs "
                f"({max_length + 1} = data.max_length + 1); lower data.max_length"
                + (" or raise data.train_ratio" if split == "train" else " or lower data.train_ratio")
            )

    def __len__(self) -> int:
        return self.num_windows

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = index * self.stride
        chunk = self.tokens[start : start + self.max_length + 1]
        return chunk[:-1], chunk[1:]
