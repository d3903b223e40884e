"""Token shards (gptlab.data.shards): llm.c's layout written and read back, nanoGPT's and llm.c's files made
the way those projects make them, sizes checked against headers, windows that never cross a file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gptlab.core.errors import DataError
from gptlab.data.shards import (
    HEADER_BYTES,
    open_shard,
    summarize_shard,
    write_shard,
)
from gptlab.data.tokenizers import GPT2Tokenizer
from gptlab.data.windows import ShardWindows, TokenWindows


@pytest.fixture(scope="module")
def tokenizer() -> GPT2Tokenizer:
    return GPT2Tokenizer()


@pytest.fixture(scope="module")
def play_tokens(shakespeare_text, tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Tiny Shakespeare as two documents (its two halves), each ended by <|endoftext|>, as GPT-2 BPE ids."""
    half = len(shakespeare_text) // 2
    return tuple(
        np.array(tokenizer.encode_corpus(part) + [tokenizer.eos_id], dtype=np.int64)
        for part in (shakespeare_text[:half], shakespeare_text[half:])
    )


def test_a_shard_gives_back_its_tokens_and_the_text(tmp_path, play_tokens, tokenizer, shakespeare_text):
    first, _ = play_tokens
    path = tmp_path / "shakespeare_000000.bin"
    write_shard(path, first, tokenizer.vocab_size)
    header = np.fromfile(path, dtype=np.int32, count=256)
    assert header[:3].tolist() == [20240520, 1, len(first)] and not header[3:].any()
    assert path.stat().st_size == HEADER_BYTES + 2 * len(first)  # uint16: GPT-2's 50,257 ids fit
    tokens = open_shard(path)
    assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
    assert np.array_equal(tokens, first)
    assert tokenizer.decode(tokens[:-1].tolist()) == shakespeare_text[: len(shakespeare_text) // 2]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # written atomically: no temporary left


def test_a_vocabulary_past_65536_ids_is_written_as_uint32(tmp_path):
    ids = np.array([0, 65_535, 65_536, 99_999, 7], dtype=np.int64)
    write_shard(tmp_path / "big.bin", ids, vocab_size=100_000)
    assert np.fromfile(tmp_path / "big.bin", dtype=np.int32, count=2).tolist() == [20240801, 7]
    tokens = open_shard(tmp_path / "big.bin")
    assert tokens.dtype == np.uint32 and tokens.tolist() == ids.tolist()
    with pytest.raises(DataError, match="outside 0..99"):
        write_shard(tmp_path / "bad.bin", np.array([100]), vocab_size=100)
    assert not (tmp_path / "bad.bin").exists()


def test_shards_made_by_nanogpt_and_llmc_read_with_the_right_tokens(tmp_path, play_tokens):
    first, second = play_tokens
    # nanoGPT's prepare.py: the uint16 ids and nothing else (np.memmap / tofile).
    first.astype(np.uint16).tofile(tmp_path / "train.bin")
    # llm.c's write_datafile: 256 int32 (magic, version, count), then uint16 ids.
    header = np.zeros(256, dtype=np.int32)
    header[:3] = (20240520, 1, len(second))
    with open(tmp_path / "fineweb_val_000000.bin", "wb") as f:
        f.write(header.tobytes())
        f.write(second.astype(np.uint16).tobytes())
    assert np.array_equal(open_shard(tmp_path / "train.bin"), first)
    assert np.array_equal(open_shard(tmp_path / "fineweb_val_000000.bin"), second)


def test_a_truncated_or_odd_shard_is_refused_with_its_sizes(tmp_path, play_tokens, tokenizer):
    first, _ = play_tokens
    path = tmp_path / "cut.bin"
    write_shard(path, first, tokenizer.vocab_size)
    path.write_bytes(path.read_bytes()[:-10])
    expected = HEADER_BYTES + 2 * len(first)
    with pytest.raises(DataError, match=f"header says {len(first)} tokens \\({expected} bytes\\) and the file holds {expected - 10}"):
        open_shard(path)
    (tmp_path / "odd.bin").write_bytes(b"\x01\x02\x03")
    with pytest.raises(DataError, match="odd count"):
        open_shard(tmp_path / "odd.bin")
    with pytest.raises(DataError, match="does not exist"):
        open_shard(tmp_path / "nope.bin")


def test_windows_stay_inside_their_shard_and_match_one_stream_each(tmp_path, play_tokens, tokenizer):
    first, second = play_tokens
    paths = []
    for i, tokens in enumerate((first, np.array([1, 2, 3]), second)):  # a shard too short for a window
        paths.append(tmp_path / f"s{i}.bin")
        write_shard(paths[-1], tokens, tokenizer.vocab_size)
    windows = ShardWindows(paths, max_length=64, stride=48)
    per_shard = [TokenWindows(torch.from_numpy(t), max_length=64, stride=48) for t in (first, second)]
    assert len(windows) == sum(len(w) for w in per_shard)
    expected = [w[i] for w in per_shard for i in range(len(w))]
    for index in (0, len(per_shard[0]) - 1, len(per_shard[0]), len(windows) - 1):
        x, y = windows[index]
        assert x.dtype == torch.int64 and torch.equal(x, expected[index][0]) and torch.equal(y, expected[index][1])
    with pytest.raises(IndexError):
        windows[len(windows)]
    with pytest.raises(DataError, match="no training shard holds a whole window"):
        ShardWindows([paths[1]], max_length=64, stride=64)


def test_the_largest_id_is_found_a_chunk_at_a_time(play_tokens):
    first, _ = play_tokens
    summary = summarize_shard(first, chunk=1000)
    assert summary.tokens == len(first) and summary.max_id == int(first.max()) == 50256
