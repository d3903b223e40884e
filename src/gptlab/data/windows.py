"""Sliding windows over one token stream: inputs are tokens [i, i+L), targets are [i+1, i+L+1).

The stream is held once as a tensor; a window is a slice of it, never a stored copy.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from gptlab.core.errors import ConfigError, DataError
from gptlab.models.fused_loss import IGNORE_INDEX  # a target the loss skips (torch's default, -100)


def count_windows(num_tokens: int, max_length: int, stride: int) -> int:
    """Number of windows: starts 0, stride, 2*stride, ... while a full window plus its target fits."""
    if num_tokens <= max_length:
        return 0
    return (num_tokens - max_length - 1) // stride + 1


class TokenWindows(Dataset):
    def __init__(self, tokens: torch.Tensor, max_length: int, stride: int, split: str = "train"):
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


class ScoredWindows(TokenWindows):
    """Evaluation windows that score every target of the stream (tokens 1 .. N-1) exactly once.

    Windows start every ``stride`` tokens as in training, plus a tail window ending at the last token when
    those stop short of it. Targets an earlier window already scored are set to ``IGNORE_INDEX`` (-100, which
    the loss skips), so overlapping windows (a stride below max_length, or the tail) score only what is
    new to them, with the most context: the sliding-window evaluation of transformers' perplexity guide.
    """

    def __init__(self, tokens: torch.Tensor, max_length: int, stride: int, split: str = "validation"):
        super().__init__(tokens, max_length, stride, split)
        if stride > max_length:
            raise ConfigError(
                f"data.val_stride={stride} is longer than data.max_length={max_length}: the tokens between "
                f"windows would never be scored; use data.val_stride={max_length} or less"
            )
        self.starts = [index * stride for index in range(self.num_windows)]
        last_start = len(tokens) - 1 - max_length
        if self.starts[-1] < last_start:
            self.starts.append(last_start)
        # Index (within a window's targets) of the first target no earlier window scored.
        self.first_new = [0] + [
            previous + max_length - start for previous, start in zip(self.starts, self.starts[1:], strict=False)
        ]

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.starts[index]
        chunk = self.tokens[start : start + self.max_length + 1]
        targets = chunk[1:]
        if self.first_new[index] > 0:
            targets = targets.clone()
            targets[: self.first_new[index]] = IGNORE_INDEX
        return chunk[:-1], targets
