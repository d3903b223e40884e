"""The LightningDataModule: corpus text -> tokenizer -> token tensors -> windows -> batches."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader

from gptlab.core.errors import ConfigError
from gptlab.data import token_cache
from gptlab.data.corpora import corpus_path, read_corpus
from gptlab.data.sampler import ResumableDataLoader, ResumableRandomSampler
from gptlab.data.tokenizers import CharTokenizer, GPT2Tokenizer
from gptlab.data.windows import ScoredWindows, TokenWindows
from gptlab.training.distributed import validation_sampler

# The training window when data.max_length is unset and the model's context is at least this long.
DEFAULT_WINDOW = 256


def split_text(text: str, train_ratio: float) -> tuple[str, str]:
    """Split on characters, before tokenising, as the reference notebooks do (90/10 by default)."""
    cut = int(train_ratio * len(text))
    return text[:cut], text[cut:]


class TextDataModule(L.LightningDataModule):
    def __init__(
        self,
        corpus: str,
        tokenizer: str = "gpt2",
        data_dir: str = "data",
        batch_size: int = 8,
        max_length: int | None = None,
        stride: int | None = None,
        val_stride: int | None = None,
        train_ratio: float = 0.9,
        num_workers: int = 0,
        seed: int = 0,
        cache_dir: str | None = None,
    ):
        super().__init__()  # the values' ranges are the data schema's (gptlab.config.data)
        self.corpus = corpus
        self.tokenizer_kind = tokenizer
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        # None: decided by the model the run starts from (fit_window), or DEFAULT_WINDOW.
        self.max_length = max_length
        self._stride = stride
        self._val_stride = val_stride
        self.train_ratio = train_ratio
        self.num_workers = num_workers
        self.seed = seed  # of the training order: each epoch's shuffle depends on (seed, epoch) only
        # Token ids of each split are cached here between runs (gptlab.data.token_cache); None: never.
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.tokenizer = None
        self._text: str | None = None  # the corpus, between load_tokenizer and setup
        self.train_set = self.val_set = None
        self._train_loader: ResumableDataLoader | None = None
        self._resume_position: dict | None = None

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

    def prepare_data(self) -> None:
        corpus_path(self.corpus, self.data_dir)  # fetch and verify once, before any rank reads it

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.load_tokenizer()
        text, self._text = self._text, None
        if self.max_length is None:
            self.max_length = DEFAULT_WINDOW
        self.train_tokens, self.val_tokens = self._tokenize(text)
        self.train_set = TokenWindows(self.train_tokens, self.max_length, self.stride, split="train")
        self.val_set = ScoredWindows(self.val_tokens, self.max_length, self.val_stride, split="validation")
        if len(self.train_set) < self.batch_size:
            # Training batches drop the last partial batch, so this would train on nothing.
            raise ConfigError(
                f"the train split gives {len(self.train_set)} windows, fewer than one batch of "
                f"data.batch_size={self.batch_size}; lower data.batch_size, data.max_length or data.stride"
            )

    def load_tokenizer(self) -> None:
        """Read the corpus and build its tokenizer (the character tokenizer is the corpus's characters):
        what the model needs to know before the windows are cut (setup)."""
        if self.tokenizer is not None:
            return
        self._text = read_corpus(self.corpus, self.data_dir)
        self.tokenizer = CharTokenizer.from_text(self._text) if self.tokenizer_kind == "char" else GPT2Tokenizer()

    def _tokenize(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids of the train and validation splits: from the cache when it holds them, else encoded."""
        path = key = None
        if self.cache_dir is not None:
            key = token_cache.cache_key(text, self.tokenizer.identity(), self.train_ratio)
            path = token_cache.cache_path(self.cache_dir, self.corpus, self.tokenizer_kind, key)
            cached = token_cache.load_splits(path, key, self.tokenizer.vocab_size)
            if cached is not None:
                return cached
        train_text, val_text = split_text(text, self.train_ratio)
        train, val = self._encode(train_text), self._encode(val_text)
        if path is not None:
            token_cache.save_splits(path, key, train, val)
        return train, val

    def _encode(self, text: str) -> torch.Tensor:
        return torch.tensor(self.tokenizer.encode_corpus(text), dtype=torch.long)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def train_dataloader(self) -> DataLoader:
        if self.trainer is not None and self.trainer.world_size > 1:
            # Lightning swaps in a DistributedSampler for several processes; resume is then per epoch.
            return self._loader(self.train_set, shuffle=True, drop_last=True)
        loader = ResumableDataLoader(
            self.train_set,
            sampler=ResumableRandomSampler(len(self.train_set), seed=self.seed),
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

    def val_dataloader(self) -> DataLoader:
        # Ordered, and the last partial batch is kept so every validation window counts.
        sampler = validation_sampler(self.val_set, self.trainer)  # several ranks: each window once
        if sampler is not None:
            return DataLoader(self.val_set, sampler=sampler, **self._loader_settings(drop_last=False))
        return self._loader(self.val_set, shuffle=False, drop_last=False)

    def _loader(self, dataset: TokenWindows, shuffle: bool, drop_last: bool) -> DataLoader:
        return DataLoader(dataset, shuffle=shuffle, **self._loader_settings(drop_last))

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
