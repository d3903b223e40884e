"""What every data class shares: token windows -> batches, the training window fitted to the model, and the
position in the training data that travels in every checkpoint (exact mid-epoch resume).

A subclass says where the tokens come from: ``load_tokenizer`` (what the model needs to know first) and
``make_datasets`` (the training and validation windows, once the window length is settled).

No Lightning here: eval.py and prepare.py read data through these classes alone (Lightning's import is
1.7 s of a start). The Trainer fits their LightningDataModule twins, the same
classes with Lightning's base added (gptlab.data.window_datamodule), which is what the configs name.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from gptlab.core.errors import ConfigError
from gptlab.data.sampler import ResumableDataLoader, ResumableRandomSampler

# The training window when data.max_length is unset and the model's context is at least this long.
DEFAULT_WINDOW = 256


class WindowData:
    trainer = None  # the Trainer fitting the LightningDataModule twin (Lightning sets it), else None

    def __init__(
        self,
        batch_size: int = 8,
        max_length: int | None = None,
        stride: int | None = None,
        val_stride: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()  # LightningDataModule's in a twin; the ranges are the data schema's (gptlab.config.data)
        self.batch_size = batch_size
        # None: decided by the model the run starts from (fit_window), or DEFAULT_WINDOW.
        self.max_length = max_length
        self._stride = stride
        self._val_stride = val_stride
        self.num_workers = num_workers
        self.seed = seed  # of the training order: each epoch's shuffle depends on (seed, epoch) only
        self.tokenizer = None
        # data.tokenizer=char reads the text with this vocabulary (a trained character model's: eval.py) where
        # set, instead of the corpus's own characters; the data kinds that build a vocabulary honour it.
        self.vocabulary = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._train_loader: ResumableDataLoader | None = None
        self._resume_position: dict | None = None

    # --- what a subclass provides --------------------------------------------------------------------
    @property
    def name(self) -> str:
        """How the data is named in messages (`data=<name>`)."""
        raise NotImplementedError

    def prepare_data(self) -> None:
        """What must be fetched or tokenised before load_tokenizer and setup (LightningDataModule's hook, so
        a twin's Trainer calls it too); data read as it is, such as shards, has nothing to do."""

    def load_tokenizer(self) -> None:
        raise NotImplementedError

    def characters(self) -> str | None:
        """The characters of the data's text, for one character vocabulary several sources share (a
        mixture's); None where the ids are made already (shards), so no other vocabulary can read them."""
        return None

    def make_datasets(self) -> tuple[Dataset, Dataset]:
        """(training windows, validation windows), cut with ``max_length``, ``stride`` and ``val_stride``."""
        raise NotImplementedError

    def token_streams(self, split: str) -> list:
        """The token ids of ``split`` ("train" or "val") as whole streams, for evaluation: each a 1-D array
        whose tokens follow one another (a shard, a preset's split). After ``load_tokenizer``."""
        raise NotImplementedError

    # --- shared --------------------------------------------------------------------------------------
    @property
    def stride(self) -> int:
        """Distance between training windows; by default a window's length (no overlap)."""
        return self.max_length if self._stride is None else self._stride

    @property
    def val_stride(self) -> int:
        # Validation windows do not overlap by default (a smaller val_stride gives each scored token more
        # context); either way every validation target is scored exactly once (ScoredWindows).
        return self.max_length if self._val_stride is None else self._val_stride

    def fit_window(self, context_length: int, what: str = "model.context_length") -> int:
        """Settle the training window for a model of ``context_length`` positions: data.max_length if set
        (it must fit), else DEFAULT_WINDOW tokens or the model's whole context if shorter."""
        if self.max_length is None:
            self.max_length = min(DEFAULT_WINDOW, context_length)
        elif self.max_length > context_length:
            raise ConfigError(
                f"data.max_length={self.max_length} is longer than {what}={context_length}; "
                f"lower data.max_length to at most {context_length}, or leave it unset to follow the model"
            )
        return self.max_length

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.load_tokenizer()
        if self.max_length is None:
            self.max_length = DEFAULT_WINDOW
        self.train_set, self.val_set = self.make_datasets()
        if len(self.train_set) < self.batch_size:
            # Training batches drop the last partial batch, so this would train on nothing.
            raise ConfigError(
                f"the train split gives {len(self.train_set)} windows, fewer than one batch of "
                f"data.batch_size={self.batch_size}; lower data.batch_size, data.max_length or data.stride"
            )

    def make_train_sampler(self, rank: int, ranks: int) -> ResumableRandomSampler:
        # Several processes: each rank its own windows of the same order, resumable mid-epoch too.
        return ResumableRandomSampler(len(self.train_set), seed=self.seed, rank=rank, num_replicas=ranks)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def train_dataloader(self) -> DataLoader:
        rank, ranks = (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)
        loader = ResumableDataLoader(
            self.train_set,
            sampler=self.make_train_sampler(rank, ranks),
            consumed_batches=self._consumed_train_batches,
            **self._loader_settings(drop_last=True),
        )
        if self._resume_position:
            loader.load_state_dict(self._resume_position)
            self._resume_position = None
        self._train_loader = loader
        return loader

    # The position in the training data travels in every checkpoint. Lightning also saves the loader's
    # own state, but restores it only when it builds the loader after loading the checkpoint, which it
    # does not do when the LR schedule asked for the run length first; the datamodule's state is
    # restored before any loader is built.
    def state_dict(self) -> dict:
        return self._train_loader.state_dict() if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume_position = dict(state_dict) or None

    def _consumed_train_batches(self) -> int:
        if self.trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        return self.validation_loader(self.val_set)

    def validation_loader(self, windows: Dataset) -> DataLoader:
        from gptlab.training.distributed import validation_sampler  # imports Lightning: a Trainer's run

        # Ordered, and the last partial batch is kept so every validation window counts.
        sampler = validation_sampler(windows, self.trainer)  # several ranks: each window once
        return DataLoader(windows, sampler=sampler, shuffle=False, **self._loader_settings(drop_last=False))

    def _loader_settings(self, drop_last: bool) -> dict:
        return dict(
            batch_size=self.batch_size,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            # Its own generator: creating an iterator then never draws from the global RNG, so validation
            # does not shift the training randomness (dropout) and a resumed run matches one left alone.
            generator=torch.Generator().manual_seed(self.seed),
        )
