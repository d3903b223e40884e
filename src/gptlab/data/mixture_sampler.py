"""The training order of a weighted mixture of sources (data=mixture): which source each window comes from,
and which of its windows.

An epoch of the mixture has as many windows as its sources together. Each source gets a quota of them in
proportion to its weight (largest remainders, so the quotas sum to the epoch and each is within one window
of its exact share), and the quotas are shuffled together: every epoch draws exactly its share from each
source, in a random interleaving. A source's draws are numbered across the whole run; draw g reads window
``g mod n`` of a permutation of its ``n`` windows that is drawn afresh for every pass ``g // n``. So a large
source is read without replacement across epochs (later epochs go on where the last one stopped), and a
small one wraps around, each pass in a new order, never repeating a window within a pass.

Everything depends on (seed, epoch) only, as the single-source sampler does: the order under DDP (every
rank every N-th window), the exact mid-epoch resume and the count of windows drawn from each source up to
any point (what the run logs) follow from it.
"""

from __future__ import annotations

import torch

from gptlab.data.sampler import ResumableRandomSampler


def source_quotas(weights: list[float], total: int) -> list[int]:
    """Windows per epoch for each source: ``total`` split in proportion to ``weights``, largest remainders."""
    weight_sum = sum(weights)
    exact = [total * weight / weight_sum for weight in weights]
    quotas = [int(share) for share in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (quotas[i] - exact[i], i))
    for i in by_remainder[: total - sum(quotas)]:
        quotas[i] += 1
    return quotas


class MixtureSampler(ResumableRandomSampler):
    """Indices into the sources' training windows laid end to end (a ConcatDataset of them)."""

    def __init__(
        self, sizes: list[int], weights: list[float], seed: int = 0, rank: int = 0, num_replicas: int = 1
    ):
        super().__init__(sum(sizes), seed=seed, rank=rank, num_replicas=num_replicas)
        self.sizes = list(sizes)
        self.quotas = source_quotas(weights, self.total)
        self.offsets = [0, *torch.tensor(self.sizes).cumsum(0).tolist()]  # where each source's windows start
        self._quota_starts = torch.tensor([0, *self.quotas]).cumsum(0)
        self._sources_of: tuple[int, torch.Tensor, torch.Tensor] | None = None  # (epoch, sources, slots)

    def sources(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(source of each position of the epoch, its draw number within the source's quota this epoch)."""
        if self._sources_of is None or self._sources_of[0] != epoch:
            # A shuffled list of quota slots: source s owns the slots of a range.
            slots = super().permutation(epoch)
            sources = torch.bucketize(slots, self._quota_starts[1:], right=True)
            draws = (slots - self._quota_starts[sources]).to(torch.int32)
            del slots  # kept small: at 10B tokens an epoch has ten million positions
            small = torch.uint8 if len(self.sizes) < 256 else torch.int32
            self._sources_of = (epoch, sources.to(small), draws)
        return self._sources_of[1], self._sources_of[2]

    def permutation(self, epoch: int) -> torch.Tensor:
        sources, draws = self.sources(epoch)
        order = torch.empty(self.total, dtype=torch.long)
        for source, quota in enumerate(self.quotas):
            where = sources == source
            windows = self._source_windows(source, first_draw=epoch * quota, count=quota)
            order[where] = self.offsets[source] + windows[draws[where].long()]
        return order

    def _source_windows(self, source: int, first_draw: int, count: int) -> torch.Tensor:
        """The windows of draws first_draw .. first_draw + count - 1 of ``source`` (numbered over the run)."""
        size = self.sizes[source]
        parts, draw, end = [], first_draw, first_draw + count
        while draw < end:
            passes, position = divmod(draw, size)
            take = min(size - position, end - draw)
            parts.append(self._pass_order(source, passes)[position : position + take])
            draw += take
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)

    def _pass_order(self, source: int, passes: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + source) * 1_000_003 + passes + 1)
        return torch.randperm(self.sizes[source], generator=generator)

    def windows_drawn(self, epoch: int, positions: int) -> torch.Tensor:
        """Windows taken from each source by the first ``positions`` positions of ``epoch`` (all ranks)."""
        sources, _ = self.sources(epoch)
        return torch.bincount(sources[:positions].long(), minlength=len(self.sizes))
