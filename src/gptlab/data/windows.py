"""Sliding windows over token streams: inputs are tokens [i, i+L), targets are [i+1, i+L+1).

A stream is held once (a tensor, or a shard's memory map); a window is a slice of it, never a stored copy.
"""

from __future__ import annotations

import os
from bisect import bisect_right
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from gptlab.core.errors import ConfigError, DataError
from gptlab.data.shards import open_shard
from gptlab.models.fused_loss import IGNORE_INDEX  # a target the loss skips (torch's default, -100)


def as_ids(chunk: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Token ids as the int64 tensor the embedding takes (shards hold uint16 or uint32)."""
    if isinstance(chunk, torch.Tensor):
        return chunk
    return torch.from_numpy(np.asarray(chunk, dtype=np.int64))


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
        chunk = as_ids(self.tokens[start : start + self.max_length + 1])
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
        chunk = as_ids(self.tokens[start : start + self.max_length + 1])
        targets = chunk[1:]
        if self.first_new[index] > 0:
            targets = targets.clone()
            targets[: self.first_new[index]] = IGNORE_INDEX
        return chunk[:-1], targets


# A process reopens its shard maps after this many windows, so the pages a long run has read stop counting
# in its resident memory (nanoGPT reopens its memmap every batch for the same reason, its PR#428).
REOPEN_AFTER_READS = 4096


class ShardWindows(Dataset):
    """Training windows over shard files: window i of shard s reads tokens [i * stride, i * stride + L]
    of that shard, so no window crosses a file. Holds each shard's path and one offset per shard, nothing
    per window; each process (a loader worker too) opens its own memory maps, lazily."""

    def __init__(self, paths: list[str | Path], max_length: int, stride: int):
        self.paths = [str(path) for path in paths]
        self.max_length, self.stride = max_length, stride
        counts = [count_windows(len(open_shard(path)), max_length, stride) for path in self.paths]
        self.first_window = np.cumsum([0, *counts]).tolist()  # window number where each shard starts
        if self.first_window[-1] == 0:
            raise DataError(
                f"no training shard holds a whole window of {max_length + 1} tokens (data.max_length + 1); "
                "lower data.max_length"
            )
        self._maps: list[np.memmap | None] = []
        self._owner_pid = -1
        self._reads = 0

    def __len__(self) -> int:
        return self.first_window[-1]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        shard = bisect_right(self.first_window, index) - 1
        start = (index - self.first_window[shard]) * self.stride
        chunk = as_ids(self._shard(shard)[start : start + self.max_length + 1])
        return chunk[:-1], chunk[1:]

    def _shard(self, shard: int) -> np.memmap:
        if self._owner_pid != os.getpid() or self._reads >= REOPEN_AFTER_READS:
            self._maps, self._owner_pid, self._reads = [None] * len(self.paths), os.getpid(), 0
        self._reads += 1
        if self._maps[shard] is None:
            self._maps[shard] = open_shard(self.paths[shard])
        return self._maps[shard]

    def __getstate__(self) -> dict:  # a loader worker opens its own maps
        return {**self.__dict__, "_maps": [], "_owner_pid": -1}


def scored_shard_windows(paths: list[str | Path], max_length: int, stride: int) -> ConcatDataset:
    """Validation windows over shard files, every target of each shard scored once (ScoredWindows); a
    shard shorter than one window is left out."""
    streams = [open_shard(path) for path in paths]
    parts = [
        ScoredWindows(tokens, max_length, stride, split="validation")
        for tokens in streams
        if count_windows(len(tokens), max_length, stride)
    ]
    if not parts:
        total = sum(len(tokens) for tokens in streams)
        raise DataError(
            f"the validation shards hold {total} tokens and none a whole window of {max_length + 1} "
            "(data.max_length + 1); lower data.max_length, or give more validation text"
        )
    return ConcatDataset(parts)
