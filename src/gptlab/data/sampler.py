"""A shuffling sampler and a data loader whose position can be saved and restored (exact mid-epoch resume),
on one process or several.

Each epoch's order is a permutation drawn from its own generator seeded by (seed, epoch), so it depends on
nothing else (not the global RNG, not how many times an iterator was created). Under DDP every rank draws
the same permutation and takes every ``num_replicas``-th window of it from its rank on: the ranks' windows
are disjoint and together the whole epoch (less fewer than ``num_replicas`` windows, so every rank takes as
many). The loader's state is the epoch and how many samples of it this rank consumed; Lightning saves it in
every checkpoint and restores it before iterating again, so a resumed run sees the rest of the interrupted
epoch in the same order and then the same later epochs as a run left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler

# Ids handed to the loader a slice at a time: converting a 10M-window epoch to one Python list would cost
# hundreds of megabytes.
_SLICE = 1 << 16


class ResumableRandomSampler(DistributedSampler):
    """A DistributedSampler so that Lightning, under DDP, neither replaces it nor wraps it in one of its own
    (its own would split the windows a second time); DistributedSampler's constructor is not used."""

    def __init__(self, num_samples: int, seed: int = 0, rank: int = 0, num_replicas: int = 1):
        self.total = num_samples  # windows in an epoch, over all ranks
        self.seed, self.rank, self.num_replicas = seed, rank, num_replicas
        self.shuffle, self.drop_last = True, True
        self.num_samples = num_samples // num_replicas  # this rank's share (DistributedSampler's name)
        self.total_size = self.num_samples * num_replicas
        self.epoch = 0
        self._resume_epoch: int | None = None
        self._resume_offset = 0

    def set_epoch(self, epoch: int) -> None:  # Lightning calls this at the start of every epoch
        self.epoch = epoch

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.total, generator=generator)

    def resume_at(self, epoch: int, offset: int) -> None:
        """The next iteration of ``epoch`` starts after this rank's first ``offset`` samples."""
        self.epoch = epoch
        self._resume_epoch, self._resume_offset = epoch, offset

    def __iter__(self) -> Iterator[int]:
        start = self._resume_offset if self._resume_epoch == self.epoch else 0
        self._resume_epoch, self._resume_offset = None, 0
        mine = self.permutation(self.epoch)[self.rank : self.total_size : self.num_replicas][start:]
        for first in range(0, len(mine), _SLICE):
            yield from mine[first : first + _SLICE].tolist()

    def __len__(self) -> int:
        # The full epoch, also when resuming: Lightning counts batches against this length.
        return self.num_samples


class ResumableDataLoader(DataLoader):
    """A DataLoader over a :class:`ResumableRandomSampler` with ``state_dict`` / ``load_state_dict``.

    ``consumed_batches`` says how many batches of the current epoch the trainer has processed; the
    loader cannot count them itself, because the trainer fetches ahead of what it has trained on.
    """

    def __init__(
        self, dataset, *, sampler: ResumableRandomSampler, consumed_batches: Callable[[], int], **kwargs
    ):
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.consumed_batches = consumed_batches

    def state_dict(self) -> dict:
        if not isinstance(self.sampler, ResumableRandomSampler):
            # trainer.overfit_batches (debug=overfit): Lightning rebuilt this loader over the same first
            # batches in order (a SequentialSampler), every epoch: no position of ours to keep.
            return {}
        return {"epoch": self.sampler.epoch, "consumed_samples": self.consumed_batches() * self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.resume_at(int(state["epoch"]), int(state["consumed_samples"]))
