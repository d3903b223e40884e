"""The data group (conf/data/): which text, how it is tokenised, cut into windows and batched.

One schema per kind: a preset corpus (data=shakespeare, verdict), the user's text files (data=text), a
Hugging Face dataset (data=hf), token shards made ahead (data=shards) and a weighted mixture of these
(data=mixture). The window and batch keys are common.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gptlab.config.ranges import at_least, fraction, one_of
from gptlab.core.errors import ConfigError

DECODE_ERRORS = ("strict", "replace")


@dataclass
class WindowsConfig:
    """How any data is cut into windows and batched."""

    batch_size: int = 8
    # null: 256 tokens, or the context of the model the run starts from if shorter.
    max_length: int | None = None
    stride: int | None = None  # distance between training windows; null: max_length
    val_stride: int | None = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        at_least("data.batch_size", self.batch_size, 1)
        at_least("data.max_length", self.max_length, 1)
        for key, value in (("data.stride", self.stride), ("data.val_stride", self.val_stride)):
            at_least(key, value, 1, " (the distance between windows)")
        at_least("data.num_workers", self.num_workers, 0)


@dataclass
class DataConfig(WindowsConfig):
    """A preset corpus of the registry (gptlab.data.corpora)."""

    _target_: str = "gptlab.data.datamodule.TextDataModule"
    corpus: str = "tinyshakespeare"
    tokenizer: str = "gpt2"
    data_dir: str = "data"
    train_ratio: float = 0.9
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        tokenizer_setting(self.tokenizer)
        fraction("data.train_ratio", self.train_ratio, open_low=True, example=0.9)


@dataclass
class PreparedConfig(WindowsConfig):
    """What the kinds that tokenise into shards first share (gptlab.data.prepare)."""

    val_ratio: float = 0.1  # the held-out share of documents, when no validation data is named
    tokenizer: str = "gpt2"
    cache_dir: str | None = None
    shard_tokens: int = 100_000_000
    num_proc: int | None = None  # tokenising processes; null: every core for a large corpus
    max_tokens: float | None = None  # stop after this many training tokens (1e9 reads as a number)

    def __post_init__(self) -> None:
        super().__post_init__()
        tokenizer_setting(self.tokenizer)
        fraction("data.val_ratio", self.val_ratio, open_low=True, example=0.1)
        at_least("data.shard_tokens", self.shard_tokens, 1)
        at_least("data.num_proc", self.num_proc, 1)
        at_least("data.max_tokens", self.max_tokens, 1)


@dataclass
class TextFilesDataConfig(PreparedConfig):
    """data=text: the user's text files."""

    _target_: str = "gptlab.data.prepared_datamodule.TextFilesDataModule"
    path: str | None = None  # a file, a folder (every .txt below it) or a glob
    val_path: str | None = None  # validation files; null: hold out val_ratio of the documents
    errors: str = "strict"  # bytes that are not UTF-8: strict stops with their offset, replace goes on
    document_separator: str | None = None  # the text between documents in a file (TinyStories' <|endoftext|>)

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of("data.errors", self.errors, DECODE_ERRORS)
        if self.document_separator == "":
            raise ConfigError(
                "data.document_separator is empty; give the text between documents (e.g. '<|endoftext|>'), or null "
                "for a document per file"
            )


@dataclass
class HFDataConfig(PreparedConfig):
    """data=hf: Hugging Face datasets.load_dataset."""

    _target_: str = "gptlab.data.prepared_datamodule.HFDataModule"
    path: str | None = None  # json / parquet / csv / text with data_files, a local file, or a Hub name
    name: str | None = None  # the dataset's configuration (FineWeb's sample-10BT)
    data_files: Any = None  # a path or glob, or a list of them
    split: str = "train"
    val_split: str | None = None  # null: hold out val_ratio of the rows
    text_column: str = "text"
    streaming: bool = False


@dataclass
class ShardsDataConfig(WindowsConfig):
    """data=shards: token shards made by `prepare.py`, llm.c or nanoGPT."""

    _target_: str = "gptlab.data.shard_datamodule.ShardDataModule"
    train: str | None = None  # a shard file or a glob of them
    val: str | None = None
    tokenizer: str = "gpt2"  # the tokenizer that made them (a shard folder of prepare.py records its own)


@dataclass
class MixtureDataConfig(WindowsConfig):
    """data=mixture: several sources, each with a weight (gptlab.data.mixture_datamodule)."""

    _target_: str = "gptlab.data.mixture_datamodule.MixtureDataModule"
    # Each a dict: kind (text, hf, shards, shakespeare, verdict), weight, an optional name, and the kind's
    # own keys; checked against the kind's schema when the data module is built.
    sources: list[Any] = field(default_factory=list)
    tokenizer: str = "gpt2"  # one for all sources
    data_dir: str = "data"
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        tokenizer_setting(self.tokenizer)


def tokenizer_setting(value: str) -> None:
    """gpt2, char, or the name of a Hugging Face tokenizer, which is checked when it is loaded."""
    if not value or not str(value).strip():
        raise ConfigError(
            "data.tokenizer is empty; use gpt2, char, or a Hugging Face tokenizer (a folder or a Hub name)"
        )


def require_path(key: str, value: str | None, example: str) -> str:
    """A path the data kind cannot do without; checked when the data module is built."""
    if not value:
        raise ConfigError(f"{key} is not set; e.g. {key}={example}")
    return value
