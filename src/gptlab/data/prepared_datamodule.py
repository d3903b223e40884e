"""Data that is tokenised into shards on first use and read from them afterwards: the user's text files
(data=text) and Hugging Face datasets (data=hf). The shards are gptlab.data.prepare's, in ``cache_dir``;
once they exist, this is a ShardData over them."""

from __future__ import annotations

from torch.utils.data import Dataset

from gptlab.config.data import require_path
from gptlab.core.errors import ConfigError, DataError
from gptlab.data.class_names import lightning_getattr
from gptlab.data.documents import TextFiles
from gptlab.data.hf_documents import HFDataset
from gptlab.data.prepare import PreparedShards, corpus_characters, prepare_shards
from gptlab.data.shard_datamodule import ShardData
from gptlab.data.tokenizers import tokenizer_from_spec


class PreparedData(ShardData):
    # What a user sets to name validation data of their own, for messages.
    validation_key = "data.val_path"

    def __init__(
        self,
        val_ratio: float = 0.1,
        tokenizer: str = "gpt2",
        cache_dir: str | None = None,
        shard_tokens: int = 100_000_000,
        num_proc: int | None = None,
        max_tokens: float | None = None,
        **windows,
    ):
        super().__init__(None, None, tokenizer, **windows)
        self.val_ratio, self.cache_dir, self.shard_tokens, self.num_proc = val_ratio, cache_dir, shard_tokens, num_proc
        self.max_tokens = int(max_tokens) if max_tokens is not None else None
        self.prepared: PreparedShards | None = None

    def make_source(self):
        """The document source (gptlab.data.documents.TextFiles, gptlab.data.hf_documents.HFDataset)."""
        raise NotImplementedError

    @property
    def separate_validation(self) -> bool:
        raise NotImplementedError

    def prepare_data(self, progress: bool = True) -> PreparedShards:
        if self.prepared is None:
            source = self.make_source()
            vocabulary = self.vocabulary if self.tokenizer_kind == "char" else None
            self.prepared = prepare_shards(
                source, self.tokenizer_kind, self._writable_cache_dir(), self.shard_tokens, self.num_proc, progress,
                self.max_tokens, vocabulary,
            )
        return self.prepared

    def characters(self) -> str:
        return corpus_characters(self.make_source(), self._writable_cache_dir())

    def _writable_cache_dir(self) -> str:
        if not self.cache_dir:
            raise ConfigError(f"data={self.name} tokenises into data.cache_dir, which is null; set it to a writable folder")
        return self.cache_dir

    @property
    def described(self) -> str:
        """The keys that name the data, as a user typed them."""
        return f"data.path={self.path}"

    def load_tokenizer(self) -> None:
        if self.tokenizer is not None:
            return
        prepared = self.prepare_data()
        self.train_paths, self.val_paths = prepared.paths("train"), prepared.paths("val")
        self.tokenizer = tokenizer_from_spec(prepared.tokenizer_spec)

    def make_datasets(self) -> tuple[Dataset, Dataset]:
        held_out, trained = self.prepared.tokens("val"), self.prepared.tokens("train")
        if not self.separate_validation:
            self._check_corpus_size()
        if held_out <= self.max_length and not self.separate_validation:
            raise DataError(
                f"data.val_ratio={self.val_ratio} leaves {held_out} validation tokens, fewer than one window of "
                f"{self.max_length + 1} (data.max_length + 1); raise data.val_ratio, lower data.max_length, or "
                f"name validation data with {self.validation_key}"
            )
        if trained <= self.max_length and not self.separate_validation:
            # The shards' own line ("lower data.max_length") would not name the split that took the text.
            raise DataError(
                f"data.val_ratio={self.val_ratio} leaves {trained} training tokens (of {trained + held_out}), fewer "
                f"than one window of {self.max_length + 1} (data.max_length + 1); lower data.val_ratio, lower "
                f"data.max_length, or name validation data with {self.validation_key}"
            )
        return super().make_datasets()

    def _check_corpus_size(self) -> None:
        """A corpus too small for a training and a validation window is said so before the split is blamed:
        raising data.val_ratio (what the split's line suggests) cannot help a file of 98 tokens."""
        index = self.prepared.index
        total = sum(index["splits"][split]["tokens"] for split in ("train", "val"))
        separators = sum(index["splits"][split]["documents"] for split in ("train", "val"))
        text_tokens = total - (separators if index.get("eos_id") is not None else 0)
        source = self.described
        if text_tokens == 0:
            raise DataError(f"{source} holds no text (only empty documents); give data that holds text")
        needed = 2 * (self.max_length + 1)
        if total < needed:
            raise DataError(
                f"{source} gives {total} tokens in all, fewer than the {needed} that a training and a validation "
                f"window of {self.max_length + 1} (data.max_length + 1) need; lower data.max_length or give more text"
            )


class TextFilesData(PreparedData):
    """data=text: a file, a folder of .txt files or a glob, each file one document (or several, between
    ``document_separator``s)."""

    def __init__(
        self,
        path: str | None = None,
        val_path: str | None = None,
        errors: str = "strict",
        document_separator: str | None = None,
        **settings,
    ):
        super().__init__(**settings)
        self.path, self.val_path, self.errors, self.document_separator = path, val_path, errors, document_separator

    @property
    def name(self) -> str:
        return "text"

    @property
    def separate_validation(self) -> bool:
        return bool(self.val_path)

    def make_source(self) -> TextFiles:
        return TextFiles(
            require_path("data.path", self.path, "my_texts/"), self.val_path, self.val_ratio, self.errors, self.document_separator
        )


class HFData(PreparedData):
    """data=hf: Hugging Face ``datasets.load_dataset`` (local json/jsonl/parquet/csv files, or the Hub)."""

    validation_key = "data.val_split"

    def __init__(
        self,
        path: str | None = None,
        name: str | None = None,
        data_files=None,
        split: str = "train",
        val_split: str | None = None,
        text_column: str = "text",
        streaming: bool = False,
        **settings,
    ):
        super().__init__(**settings)
        self.path, self.dataset_name, self.data_files, self.split = path, name, data_files, split
        self.val_split, self.text_column, self.streaming = val_split, text_column, streaming
        self.part: tuple[int, int] | None = None  # set by prepare.py parts=N (gptlab.data.prepare_parts)

    @property
    def name(self) -> str:
        return "hf"

    @property
    def separate_validation(self) -> bool:
        return bool(self.val_split)

    @property
    def described(self) -> str:
        files = f" data.data_files={self.data_files}" if self.data_files is not None else ""
        return f"data.path={self.path}{files}"

    def make_source(self) -> HFDataset:
        path = require_path("data.path", self.path, "json data.data_files=corpus.jsonl")
        data_files = list(self.data_files) if self.data_files is not None and not isinstance(self.data_files, str) else self.data_files
        return HFDataset(
            path, self.dataset_name, data_files, self.split, self.val_split, self.val_ratio, self.text_column,
            self.streaming, self.cache_dir, self.part,
        )


# What the configs name (data._target_): each class's LightningDataModule twin (gptlab.data.class_names).
LIGHTNING_NAMES = {"TextFilesDataModule": TextFilesData, "HFDataModule": HFData}
__getattr__ = lightning_getattr(__name__, LIGHTNING_NAMES)
