"""Data from token shards named directly (data=shards: made by prepare.py, llm.c or nanoGPT). Training
windows are drawn from memory maps (ShardWindows); batching and resume are WindowData's. The data
kinds that make their shards first (data=text, data=hf) build on this: gptlab.data.prepared_datamodule.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

from torch.utils.data import Dataset

from gptlab.config.data import require_path
from gptlab.core.errors import ConfigError, DataError
from gptlab.data.class_names import lightning_getattr
from gptlab.data.prepare import INDEX
from gptlab.data.shards import open_shard, summarize_shard
from gptlab.data.tokenizers import setting_of, tokenizer_from_setting, tokenizer_from_spec
from gptlab.data.window_data import WindowData
from gptlab.data.windows import ShardWindows, scored_shard_windows

# Tokens read from the start of each shard made elsewhere to check its ids against the vocabulary (all of
# them would mean reading the whole corpus at every start).
ID_CHECK_TOKENS = 1 << 20


def shard_files(pattern: str, key: str) -> list[Path]:
    expanded = os.path.expanduser(pattern)
    files = sorted(Path(p) for p in glob.glob(expanded)) if glob.has_magic(expanded) else [Path(expanded)]
    files = [f for f in files if f.name != INDEX]
    if not files or not files[0].exists():
        raise DataError(f"{key}={pattern} names no shard file; give a .bin file or a glob of them (quoted)")
    return files


class ShardData(WindowData):
    def __init__(self, train: str | None = None, val: str | None = None, tokenizer: str = "gpt2", **windows):
        super().__init__(**windows)  # batch_size, max_length, stride, val_stride, num_workers, seed
        self.train_pattern, self.val_pattern = train, val
        self.tokenizer_kind = tokenizer
        self.train_paths: list[Path] = []
        self.val_paths: list[Path] = []

    @property
    def name(self) -> str:
        return "shards"

    def load_tokenizer(self) -> None:
        if self.tokenizer is not None:
            return
        self.train_paths = shard_files(require_path("data.train", self.train_pattern, "'train_*.bin'"), "data.train")
        self.val_paths = shard_files(require_path("data.val", self.val_pattern, "val_000000.bin"), "data.val")
        recorded = _recorded_tokenizer(self.train_paths[0].parent)
        if recorded is not None and not _same_setting(setting_of(recorded), self.tokenizer_kind):
            raise DataError(
                f"the shards in {self.train_paths[0].parent} were made with the {setting_of(recorded)} tokenizer "
                f"(its {INDEX}), not data.tokenizer={self.tokenizer_kind}; set data.tokenizer={setting_of(recorded)}"
            )
        if recorded is None and self.tokenizer_kind == "char":
            raise ConfigError(
                "data.tokenizer=char needs the shards' own vocabulary: use shards made by prepare.py (their "
                f"folder holds {INDEX}), or data=text"
            )
        self.tokenizer = tokenizer_from_spec(recorded) if recorded else tokenizer_from_setting(self.tokenizer_kind)
        if recorded is None:
            self._check_ids_fit()

    def _check_ids_fit(self) -> None:
        """Shards made elsewhere say nothing of their tokenizer: an id past the vocabulary shows they are
        another's (a uint16 shard of a 65,536-id vocabulary, say) before the embedding fails on it."""
        vocab = self.tokenizer.vocab_size
        for path in [*self.train_paths, *self.val_paths]:
            largest = summarize_shard(open_shard(path)[:ID_CHECK_TOKENS]).max_id
            if largest >= vocab:
                raise DataError(
                    f"shard {path} holds token id {largest}, past the {vocab} ids of data.tokenizer="
                    f"{self.tokenizer_kind}: it was made with another tokenizer; set data.tokenizer to that one"
                )

    def token_streams(self, split: str) -> list:
        return [open_shard(path) for path in (self.train_paths if split == "train" else self.val_paths)]

    def make_datasets(self) -> tuple[Dataset, Dataset]:
        train = ShardWindows(self.train_paths, self.max_length, self.stride)
        return train, scored_shard_windows(self.val_paths, self.max_length, self.val_stride)


def _same_setting(recorded: str, setting: str) -> bool:
    """A tokenizer recorded by name or folder is the one data.tokenizer names, relative or not."""
    return recorded == setting or Path(recorded) == Path(setting).expanduser().resolve()


def _recorded_tokenizer(folder: Path) -> dict | None:
    index = folder / INDEX
    if not index.is_file():
        return None
    try:
        return json.loads(index.read_text())["tokenizer"]
    except (ValueError, KeyError):
        return None


# What the configs name (data._target_): each class's LightningDataModule twin (gptlab.data.class_names).
LIGHTNING_NAMES = {"ShardDataModule": ShardData}
__getattr__ = lightning_getattr(__name__, LIGHTNING_NAMES)
