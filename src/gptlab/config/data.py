"""The data group (conf/data/): which text, how it is tokenised, cut into windows and batched."""

from __future__ import annotations

from dataclasses import dataclass

from gptlab.config.ranges import at_least, fraction, one_of

TOKENIZERS = ("gpt2", "char")


@dataclass
class DataConfig:
    _target_: str = "gptlab.data.datamodule.TextDataModule"
    corpus: str = "tinyshakespeare"
    tokenizer: str = "gpt2"
    data_dir: str = "data"
    batch_size: int = 8
    # null: 256 tokens, or the context of the model the run starts from if shorter.
    max_length: int | None = None
    stride: int | None = None  # distance between training windows; null: max_length
    val_stride: int | None = None
    train_ratio: float = 0.9
    num_workers: int = 0
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        one_of("data.tokenizer", self.tokenizer, TOKENIZERS)
        at_least("data.batch_size", self.batch_size, 1)
        at_least("data.max_length", self.max_length, 1)
        for key, value in (("data.stride", self.stride), ("data.val_stride", self.val_stride)):
            at_least(key, value, 1, " (the distance between windows)")
        fraction("data.train_ratio", self.train_ratio, open_low=True, example=0.9)
        at_least("data.num_workers", self.num_workers, 0)
