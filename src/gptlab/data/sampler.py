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

    The position is saved with the number of ranks, so a run resumed on another number of processes (a
    job requeued on fewer GPUs) or with another ``data.batch_size`` goes on at the same place of the
    epoch's order: the windows consumed over all ranks are dealt out again to this run's ranks.
    Lightning's own count of the epoch's batches must then move to that place too
    (:attr:`batch_count_shift`, applied by gptlab.training.resume.ResumedDataPosition).
    """

    def __init__(
        self, dataset, *, sampler: ResumableRandomSampler, consumed_batches: Callable[[], int], **kwargs
    ):
        super().__init__(dataset, sampler=sampler, **kwargs)
        self.consumed_batches = consumed_batches
        self.batch_count_shift = 0  # batches to add to Lightning's count of the resumed epoch's batches
        self.resumed_elsewhere: str | None = None  # how a position saved by other settings was taken up
        self.order_changed: str | None = None  # a warning: the checkpoint's windows or order are not these
        # (epoch, samples) resumed past the last whole batch of this run's size: counted until that epoch ends
        self._partial_batch: tuple[int, int] | None = None

    def state_dict(self) -> dict:
        if not isinstance(self.sampler, ResumableRandomSampler):
            # trainer.overfit_batches (debug=overfit): Lightning rebuilt this loader over the same first
            # batches in order (a SequentialSampler), every epoch: no position of ours to keep.
            return {}
        batches = self.consumed_batches()
        consumed = batches * self.batch_size
        if self._partial_batch is not None and self._partial_batch[0] == self.sampler.epoch:
            consumed += self._partial_batch[1]
        return {
            "epoch": self.sampler.epoch,
            "consumed_samples": consumed,  # this rank's, in this epoch
            "world_size": self.sampler.num_replicas,
            "batches": batches,  # Lightning's count of the epoch's batches, as it will restore it
            "windows": self.sampler.total,  # with the seed, what decides the epoch's order
            "seed": self.sampler.seed,
        }

    def load_state_dict(self, state: dict) -> None:
        epoch, consumed = int(state["epoch"]), int(state["consumed_samples"])
        # Checkpoints before "world_size" and "batches" were saved: taken to be this run's settings.
        saved_ranks = int(state.get("world_size", self.sampler.num_replicas))
        offset = consumed * saved_ranks // self.sampler.num_replicas
        self.sampler.resume_at(epoch, offset)
        batches = offset // self.batch_size
        self.batch_count_shift = batches - int(state.get("batches", batches))
        self._partial_batch = (epoch, offset - batches * self.batch_size)
        if saved_ranks != self.sampler.num_replicas or self.batch_count_shift:
            self.resumed_elsewhere = (
                f"resumed on {_processes(self.sampler.num_replicas)} of data.batch_size={self.batch_size} from "
                f"a checkpoint of {_processes(saved_ranks)}: epoch {epoch} goes on after the "
                f"{consumed * saved_ranks} windows trained (at batch {batches})"
            )
        saved_order = (state.get("windows", self.sampler.total), state.get("seed", self.sampler.seed))
        if saved_order != (self.sampler.total, self.sampler.seed):
            self.order_changed = (
                f"warning: the training windows are not the checkpoint's ({saved_order[0]} windows in the order of "
                f"seed {saved_order[1]}, now {self.sampler.total} of seed {self.sampler.seed}: the corpus, "
                f"data.max_length, data.stride or seed changed); epoch {epoch} goes on at the same position of "
                "another order, so until it ends some windows come twice and others not at all"
            )


def _processes(count: int) -> str:
    return f"{count} process" if count == 1 else f"{count} processes"
