"""The preset corpora (data=shakespeare, data=verdict): one registered text, split on characters as the
reference notebooks do, tokenised, cut into windows. Batching and resume are WindowData's."""

from __future__ import annotations

from pathlib import Path

import torch

from gptlab.data import token_cache
from gptlab.data.class_names import lightning_getattr
from gptlab.data.corpora import CORPORA, corpus_path, read_corpus
from gptlab.data.tokenizers import CharTokenizer, tokenizer_from_setting
from gptlab.data.window_data import WindowData
from gptlab.data.windows import ScoredWindows, TokenWindows


def split_text(text: str, train_ratio: float) -> tuple[str, str]:
    """Split on characters, before tokenising, as the reference notebooks do (90/10 by default)."""
    cut = int(train_ratio * len(text))
    return text[:cut], text[cut:]


class TextData(WindowData):
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
        super().__init__(batch_size, max_length, stride, val_stride, num_workers, seed)
        self.corpus = corpus
        self.tokenizer_kind = tokenizer
        self.data_dir = Path(data_dir)
        self.train_ratio = train_ratio
        # Token ids of each split are cached here between runs (gptlab.data.token_cache); None: never.
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self._text: str | None = None  # the corpus, between load_tokenizer and setup

    @property
    def name(self) -> str:
        # The option a user types (verdict), not the corpus's file name (the-verdict).
        corpus = CORPORA.get(self.corpus)
        if corpus is None:
            return self.corpus
        return corpus.char_option if self.tokenizer_kind == "char" and corpus.char_option else corpus.option

    def prepare_data(self) -> None:
        corpus_path(self.corpus, self.data_dir)  # fetch and verify once, before any rank reads it

    def load_tokenizer(self) -> None:
        """Read the corpus and build its tokenizer (the character tokenizer is the corpus's characters):
        what the model needs to know before the windows are cut (setup)."""
        if self.tokenizer is not None:
            return
        self._text = read_corpus(self.corpus, self.data_dir)
        if self.tokenizer_kind == "char":
            self.tokenizer = self.vocabulary or CharTokenizer.from_text(self._text)
        else:
            self.tokenizer = tokenizer_from_setting(self.tokenizer_kind)

    def characters(self) -> str:
        return CharTokenizer.from_text(self._text or read_corpus(self.corpus, self.data_dir)).chars

    def make_datasets(self) -> tuple[TokenWindows, ScoredWindows]:
        text, self._text = self._text, None
        self.train_tokens, self.val_tokens = self._tokenize(text)
        train = TokenWindows(self.train_tokens, self.max_length, self.stride, split="train")
        return train, ScoredWindows(self.val_tokens, self.max_length, self.val_stride, split="validation")

    def token_streams(self, split: str) -> list[torch.Tensor]:
        if self._text is None:
            self._text = read_corpus(self.corpus, self.data_dir)
        train, val = self._tokenize(self._text)
        return [train if split == "train" else val]

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


# What the configs name (data._target_): each class's LightningDataModule twin (gptlab.data.class_names).
LIGHTNING_NAMES = {"TextDataModule": TextData}
__getattr__ = lightning_getattr(__name__, LIGHTNING_NAMES)
