"""Token shards on disk: files of token ids read through memory maps, so a corpus of any size costs only the
pages a batch touches (the windows over them: gptlab.data.windows.ShardWindows). numpy only, no torch: the
processes that write shards need nothing heavier.

Two layouts are read, so shards made elsewhere train here:

- llm.c's ``.bin`` (dev/data/data_common.py there): a header of 256 int32 (magic, version, token count),
  then the tokens: uint16 for vocabularies up to 65,536 ids (magic 20240520, version 1), else uint32
  (magic 20240801, version 7).
- nanoGPT's headerless ``train.bin`` / ``val.bin``: uint16 tokens and nothing else.

gptlab writes the llm.c layout, atomically (a reader never sees half a shard), in the narrowest of the two
token types that holds every id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gptlab.core.errors import DataError
from gptlab.core.files import atomic_write

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
# (magic, version) -> token type, as llm.c writes them.
LLMC_LAYOUTS = {(20240520, 1): np.dtype(np.uint16), (20240801, 7): np.dtype(np.uint32)}
UINT16_IDS = 2**16


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest token type that holds ids 0 .. vocab_size - 1."""
    return np.dtype(np.uint16) if vocab_size <= UINT16_IDS else np.dtype(np.uint32)


def write_shard(path: str | Path, tokens: np.ndarray | list[np.ndarray], vocab_size: int) -> None:
    """Write ``tokens`` (an array, or arrays written one after another without joining them first) as an
    llm.c shard: uint16 where the vocabulary fits, else uint32."""
    dtype = token_dtype(vocab_size)
    parts = [np.asarray(part) for part in (tokens if isinstance(tokens, list) else [tokens])]
    count = sum(part.size for part in parts)
    for part in parts:
        if part.size and (part.min() < 0 or part.max() >= vocab_size):
            raise DataError(f"token ids outside 0..{vocab_size - 1} cannot be written to shard {path}")
    if count >= 2**31:
        raise DataError(f"{count} tokens are too many for one shard (llm.c counts them in an int32)")
    (magic, version) = next(key for key, value in LLMC_LAYOUTS.items() if value == dtype)
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[:3] = (magic, version, count)

    def write(f) -> None:
        f.write(header.tobytes())
        for part in parts:
            f.write(part.astype(dtype, copy=False).tobytes())

    atomic_write(path, write)


def open_shard(path: str | Path) -> np.memmap:
    """The tokens of a shard (either layout) as a read-only memory map; a shard whose size does not match
    its header is refused with the sizes, never read half."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"shard {path} does not exist; check data.train / data.val")
    size = path.stat().st_size
    header = np.fromfile(path, dtype=np.int32, count=3) if size >= HEADER_BYTES else np.zeros(3, np.int32)
    dtype = LLMC_LAYOUTS.get((int(header[0]), int(header[1])))
    if dtype is not None:
        expected = HEADER_BYTES + int(header[2]) * dtype.itemsize
        if size != expected:
            raise DataError(
                f"shard {path} is truncated or corrupted: its header says {int(header[2])} tokens "
                f"({expected} bytes) and the file holds {size} bytes; make it again"
            )
        return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(int(header[2]),))
    if size % 2:
        raise DataError(
            f"shard {path} is neither an llm.c shard (no known header) nor nanoGPT's uint16 tokens (its "
            f"{size} bytes are an odd count); make it again"
        )
    return np.memmap(path, dtype=np.uint16, mode="r", shape=(size // 2,))  # nanoGPT: tokens only


@dataclass(frozen=True)
class ShardSummary:
    tokens: int
    max_id: int


def summarize_shard(tokens: np.ndarray, chunk: int = 1 << 24) -> ShardSummary:
    """Token count and largest id, read a chunk at a time (a shard may not fit in memory)."""
    max_id = -1
    for start in range(0, len(tokens), chunk):
        max_id = max(max_id, int(tokens[start : start + chunk].max()))
    return ShardSummary(len(tokens), max_id)
