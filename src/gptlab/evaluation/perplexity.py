"""Perplexity of a token stream the standard way: the sliding-window loop of the Hugging Face perplexity
guide (https://huggingface.co/docs/transformers/perplexity).

Windows of ``context`` tokens start every ``stride`` tokens. Each scores only the tokens no earlier window
scored, each from the tokens before it in its window; a token at a window's first position has nothing
before it there and is scored only if an earlier window (stride < context) did not reach it, so with
stride = context the first token of every window goes unscored, as in the guide. A smaller stride gives
each token more context (a lower, truer perplexity) for more compute.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gptlab.core.errors import ConfigError


@dataclass(frozen=True)
class Window:
    begin: int  # the window holds tokens [begin, end)
    end: int
    first_scored: int  # tokens [first_scored, end) are scored here


def sliding_windows(num_tokens: int, context: int, stride: int) -> list[Window]:
    """The guide's windows over a stream of ``num_tokens`` tokens."""
    if stride > context:
        raise ConfigError(
            f"eval.stride={stride} is longer than eval.context={context}: the tokens between windows would "
            f"never be scored; use eval.stride={context} or less"
        )
    windows, scored_to = [], 0
    for begin in range(0, num_tokens, stride):
        end = min(begin + context, num_tokens)
        windows.append(Window(begin, end, max(scored_to, begin + 1)))
        scored_to = end
        if end == num_tokens:
            break
    return [w for w in windows if w.first_scored < w.end]


@dataclass
class StreamScore:
    nll: float = 0.0  # summed negative log-likelihood of the scored tokens, in nats
    tokens: int = 0
    bytes: int = 0  # UTF-8 bytes of the scored tokens' text

    def add(self, other: StreamScore) -> None:
        self.nll += other.nll
        self.tokens += other.tokens
        self.bytes += other.bytes

    def metrics(self) -> dict[str, float]:
        mean = self.nll / max(self.tokens, 1)
        return {
            "nll": mean,
            "ppl": math.exp(mean),
            "bits_per_byte": self.nll / math.log(2) / max(self.bytes, 1),
            "tokens": self.tokens,
            "bytes": self.bytes,
        }


@torch.no_grad()
def score_stream(
    model: torch.nn.Module,
    ids: torch.Tensor | np.ndarray,
    context: int,
    stride: int,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
    byte_count=None,
) -> StreamScore:
    """Negative log-likelihood of every scored token of ``ids`` under ``model`` (ids -> logits (B, T, V)).
    ``byte_count(ids)`` gives the bytes of some tokens' text (for bits per byte)."""
    ids = torch.as_tensor(np.asarray(ids, dtype=np.int64)) if not isinstance(ids, torch.Tensor) else ids.long()
    score = StreamScore()
    windows = sliding_windows(len(ids), context, stride)
    by_length: dict[int, list[Window]] = {}
    for window in windows:
        by_length.setdefault(window.end - window.begin, []).append(window)
    for length, group in by_length.items():
        for first in range(0, len(group), batch_size):
            batch = group[first : first + batch_size]
            inputs = torch.stack([ids[w.begin : w.end] for w in batch]).to(device)
            logits = model(inputs)
            for row, window in enumerate(batch):
                # Logits at position t predict token t + 1: targets are the window's tokens 1 .. length - 1.
                start = window.first_scored - window.begin
                predicted = logits[row, start - 1 : length - 1].float()
                targets = inputs[row, start:length]
                score.nll += F.cross_entropy(predicted, targets, reduction="sum").double().item()
                score.tokens += len(targets)
    if byte_count is not None:
        scored = torch.zeros(len(ids), dtype=torch.bool)
        for window in windows:
            scored[window.first_scored : window.end] = True
        score.bytes = _scored_bytes(ids, scored, byte_count)
    return score


def _scored_bytes(ids: torch.Tensor, scored: torch.Tensor, byte_count) -> int:
    """Bytes of the scored tokens, counted over runs of consecutive scored tokens (a character split over
    several byte-level tokens counts once, whole)."""
    edges = torch.diff(scored.to(torch.int8), prepend=torch.zeros(1, dtype=torch.int8), append=torch.zeros(1, dtype=torch.int8))
    starts, ends = torch.nonzero(edges == 1).flatten(), torch.nonzero(edges == -1).flatten()
    return sum(byte_count(ids[s:e].tolist()) for s, e in zip(starts.tolist(), ends.tolist(), strict=True))


def score_streams(model, streams: Iterable, context: int, stride: int, batch_size: int, device, byte_count) -> StreamScore:
    total = StreamScore()
    for stream in streams:
        if len(stream) > 1:
            total.add(score_stream(model, stream, context, stride, batch_size, device, byte_count))
    return total
