"""Tokenise a corpus once, into token shards: documents -> ids (in parallel, on every core) -> llm.c shards
beside a small index (``index.json``).

- **Cached.** The shards live in a folder named by a key over the source's fingerprint, the tokenizer and
  the shard size; an unchanged source finds its finished folder and is ready at once, a changed source or
  tokenizer has another key and is prepared afresh.
- **Crash-safe and resumable.** Every shard is written atomically and the index, rewritten atomically after
  each shard, says which batches of documents the written shards hold; an interrupted run starts again after
  them. Training reads only the shards of a finished index, so it never sees a partial one.
- **Bounded memory.** Documents are read a piece at a time (gptlab.data.documents), at most a few batches are
  in flight, and a split holds at most one shard of ids before writing it.
- **Parallel.** Batches of about ``BATCH_BYTES`` of text go to worker processes in order; each worker builds
  the tokenizer once from its spec.

numpy and the tokenizers only: worker processes never import torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from gptlab.core.errors import ConfigError, DataError
from gptlab.core.files import atomic_write_bytes
from gptlab.data.documents import Piece
from gptlab.data.shards import HEADER_BYTES, token_dtype, write_shard
from gptlab.data.tokenizers import CharTokenizer, Tokenizer, tokenizer_from_setting, tokenizer_from_spec

# What the shards hold, in the cache key: a change of it prepares every corpus again instead of reusing
# shards made the old way. 2: a UTF-8 byte order mark at a file's start is no longer tokenised.
INDEX_FORMAT = 2
INDEX = "index.json"
SPLITS = ("train", "val")
BATCH_BYTES = 1 << 20
# Below this much text, worker processes cost more to start than they save.
POOL_MIN_BYTES = 16 << 20


@dataclass(frozen=True)
class PreparedShards:
    folder: Path
    index: dict

    def paths(self, split: str) -> list[Path]:
        return [self.folder / shard["file"] for shard in self.index["splits"][split]["shards"]]

    @property
    def tokenizer_spec(self) -> dict:
        return self.index["tokenizer"]

    def tokens(self, split: str) -> int:
        return self.index["splits"][split]["tokens"]


def prepare_shards(
    source,
    tokenizer_kind: str,
    cache_dir: str | Path,
    shard_tokens: int = 100_000_000,
    num_proc: int | None = None,
    progress: bool = True,
    max_tokens: int | None = None,
    vocabulary: CharTokenizer | None = None,
) -> PreparedShards:
    """The shards of ``source`` (a document source such as gptlab.data.documents.TextFiles) tokenised with
    ``tokenizer_kind``: found in ``cache_dir`` when prepared before, else made (or finished) there.
    ``max_tokens`` stops after that many training tokens (a sample of a corpus too large to take whole).
    ``vocabulary``: for ``char``, the characters to read the source with (a trained model's) instead of its own."""
    fingerprint = source.fingerprint()
    # A character vocabulary is the source's own (its fingerprint covers it), taken from the corpus when it
    # is prepared, unless one is given (its characters are then part of the key); any other tokenizer is
    # built once, here (a Hugging Face one reads its files).
    tokenizer = vocabulary if tokenizer_kind == "char" else tokenizer_from_setting(tokenizer_kind)
    if vocabulary is not None:
        # The source's own shards serve as they are where its characters are the vocabulary's (eval.py on
        # a character model's own corpus), rather than a second copy under the vocabulary's key.
        own_folder, own_key = _place(cache_dir, fingerprint, tokenizer_kind, shard_tokens, max_tokens)
        own = _read_index(own_folder, own_key)
        if own is not None and own["complete"] and own["tokenizer"] == vocabulary.spec() and not _damaged(own_folder, own):
            return PreparedShards(own_folder, own)
    identity = tokenizer.identity() if tokenizer else tokenizer_kind
    folder, key = _place(cache_dir, fingerprint, identity, shard_tokens, max_tokens)
    index = _read_index(folder, key)
    if index is not None and index["complete"] and not _damaged(folder, index):
        return PreparedShards(folder, index)  # prepared before: read as they are, from a read-only cache too
    _make_shard_folder(folder, cache_dir)
    with _locked(folder):  # several ranks: one prepares, the others wait and find it finished
        index = _read_index(folder, key)
        if index is not None and index["complete"] and (damage := _damaged(folder, index)):
            # A cache, like the presets' token cache: prepared again rather than refused (the user named no shard).
            print(f"note: the token shards in {folder} are damaged ({damage}); preparing them again", file=sys.stderr, flush=True)
            index = None
        if index is None or not index["complete"]:
            preparer = _Preparer(source, fingerprint, tokenizer, folder, key, shard_tokens, max_tokens, index)
            index = preparer.run(num_proc, progress)
    return PreparedShards(folder, index)


def _damaged(folder: Path, index: dict) -> str | None:
    """What is wrong with a finished set of shards on disk (a shard deleted, cut short or grown since), in
    words; None when every shard the index names has the size its tokens give. One stat per shard."""
    itemsize = token_dtype(index["vocab_size"]).itemsize
    for split in SPLITS:
        for shard in index["splits"][split]["shards"]:
            path = folder / shard["file"]
            expected = HEADER_BYTES + shard["tokens"] * itemsize
            try:
                size = path.stat().st_size
            except OSError:
                return f"{shard['file']} is missing"
            if size != expected:
                return f"{shard['file']} has {size:,} bytes, its {shard['tokens']:,} tokens take {expected:,}"
    return None


def _make_shard_folder(folder: Path, cache_dir) -> None:
    """The folder the shards go in, with its lock file: one line where data.cache_dir cannot take them (a file
    in the way, no permission; it was an OSError traceback)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ".lock").touch()
    except OSError as err:
        raise ConfigError(
            f"cannot write token shards under data.cache_dir={cache_dir} ({err.strerror or err}); point "
            "data.cache_dir (or GPTLAB_CACHE_DIR) at a folder you can write to"
        ) from None


def _place(cache_dir, fingerprint: dict, identity: str | dict, shard_tokens: int, max_tokens: int | None) -> tuple[Path, str]:
    """(folder, key) of the shards of a source tokenised by ``identity``."""
    key = _key(fingerprint, identity, shard_tokens, max_tokens)
    # The parts of one dataset (prepare.py parts=N) are folders of the dataset's own folder.
    whole = {name: value for name, value in fingerprint.items() if name != "part"}
    whole_key = _key(whole, identity, shard_tokens, max_tokens)
    folder = Path(cache_dir).expanduser() / "shards" / f"{fingerprint['kind']}-{whole_key[:16]}"
    if "part" in fingerprint:
        folder = folder / part_folder(*fingerprint["part"])
    return folder, key


def part_folder(index: int, count: int) -> str:
    return f"part-{index:05d}-of-{count:05d}"


def _key(fingerprint: dict, tokenizer: str | dict, shard_tokens: int, max_tokens: int | None) -> str:
    identity = {"format": INDEX_FORMAT, "source": fingerprint, "tokenizer": tokenizer, "shard": shard_tokens}
    if max_tokens is not None:
        identity["max_tokens"] = max_tokens
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def _locked(folder: Path):
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_index(folder: Path, key: str) -> dict | None:
    path = folder / INDEX
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
    except ValueError:
        return None  # written atomically, so never half; unreadable means foreign: prepare afresh
    return index if index.get("key") == key else None


def _write_index(folder: Path, index: dict) -> None:
    atomic_write_bytes(json.dumps(index, indent=1).encode(), folder / INDEX)


class _Preparer:
    def __init__(
        self,
        source,
        fingerprint: dict,
        tokenizer: Tokenizer | None,
        folder: Path,
        key: str,
        shard_tokens: int,
        max_tokens: int | None,
        index: dict | None,
    ):
        self.source, self.folder, self.shard_tokens, self.max_tokens = source, folder, shard_tokens, max_tokens
        for stale in folder.glob(".*.tmp"):  # what a killed run left of a shard it was writing
            stale.unlink()
        if index is None:
            tokenizer = tokenizer or _char_tokenizer(source)
            index = {
                "format": INDEX_FORMAT,
                "key": key,
                "complete": False,
                "source": fingerprint,
                "tokenizer": tokenizer.spec(),
                "vocab_size": tokenizer.vocab_size,
                "eos_id": tokenizer.eos_id,
                "shard_tokens": shard_tokens,
                "splits": {split: {"shards": [], "documents": 0, "tokens": 0, "batches": 0} for split in SPLITS},
            }
        self.index = index
        self.spec = index["tokenizer"]
        self.buffers: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
        self.buffered = dict.fromkeys(SPLITS, 0)
        self.pending_docs = dict.fromkeys(SPLITS, 0)
        self.next_batch = {split: index["splits"][split]["batches"] for split in SPLITS}

    def run(self, num_proc: int | None, progress: bool) -> dict:
        total = self.source.total_bytes()
        large = total is None or total >= POOL_MIN_BYTES  # None: a streamed source, size unknown
        workers = num_proc or (len(os.sched_getaffinity(0)) if large else 1)
        # The source's first document before the bar: a mistake found on reading it (a missing text column, a
        # file that is not text) is then one line, without an empty progress bar above it.
        documents = self.source.documents()
        documents = itertools.chain([first], documents) if (first := next(documents, None)) is not None else documents
        bar = _Progress(total, self.index, enabled=progress)
        in_flight: deque[tuple[str, int, int, Future | np.ndarray]] = deque()
        begins = dict.fromkeys(SPLITS, True)  # whether a split's next piece begins a document
        pool = ProcessPoolExecutor(workers, mp_context=get_context("forkserver")) if workers > 1 else None
        try:
            for split, number, pieces, nbytes in _batches(documents):
                if self.full():
                    break
                items = []  # (text, whether it goes on a document, whether it ends one)
                for piece in pieces:
                    items.append((piece.text, not begins[split], piece.ends_document))
                    begins[split] = piece.ends_document
                if number < self.index["splits"][split]["batches"]:  # in a shard already (resumed)
                    bar.advance(nbytes)
                    continue
                docs = sum(piece.ends_document for piece in pieces)
                work = pool.submit(encode_pieces, self.spec, items) if pool else encode_pieces(self.spec, items)
                in_flight.append((split, number, docs, work))
                while len(in_flight) > (2 * workers if pool else 0):
                    self._take(*in_flight.popleft(), bar)
                bar.advance(nbytes)
                if total is None and (total := self.source.total_bytes()) is not None:
                    bar.set_total(total)  # a compressed file's text, counted as it is read
            while in_flight and not self.full():
                self._take(*in_flight.popleft(), bar)
            for split in SPLITS:
                if self.buffered[split]:
                    self._write_shard(split)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
            bar.close()  # its line ends before any error is printed
        self.index["complete"] = True
        _write_index(self.folder, self.index)
        return self.index

    def full(self) -> bool:
        """Whether max_tokens training tokens are in: what comes after is left out, decided in the order
        batches are taken, so the same on every run."""
        train = self.index["splits"]["train"]["tokens"] + self.buffered["train"]
        return self.max_tokens is not None and train >= self.max_tokens

    def _take(self, split: str, number: int, docs: int, work, bar: _Progress) -> None:
        if self.full():
            return
        tokens = work.result() if isinstance(work, Future) else work
        if split == "train" and self.max_tokens is not None:
            room = self.max_tokens - self.index["splits"]["train"]["tokens"] - self.buffered["train"]
            tokens = tokens[:room]
        self.buffers[split].append(tokens)
        self.buffered[split] += len(tokens)
        self.pending_docs[split] += docs
        self.next_batch[split] = number + 1
        bar.tokens(len(tokens))
        if self.buffered[split] >= self.shard_tokens:
            self._write_shard(split)

    def _write_shard(self, split: str) -> None:
        record = self.index["splits"][split]
        name = f"{split}_{len(record['shards']):06d}.bin"
        tokens = self.buffered[split]
        write_shard(self.folder / name, self.buffers[split], self.index["vocab_size"])  # not joined: no copy
        record["shards"].append({"file": name, "tokens": tokens})
        record["tokens"] += tokens
        record["documents"] += self.pending_docs[split]
        record["batches"] = self.next_batch[split]
        self.buffers[split], self.buffered[split], self.pending_docs[split] = [], 0, 0
        _write_index(self.folder, self.index)  # after the shard: the index never names a missing one


def _char_tokenizer(source) -> CharTokenizer:
    # A character vocabulary is the corpus's own characters: one pass over it first.
    return CharTokenizer(_characters_of(source))


def _characters_of(source) -> str:
    chars: set[str] = set()
    for _, piece in source.documents():
        if piece is not None:
            chars.update(piece.text)
    if not chars:
        raise DataError("the corpus holds no text to take a character vocabulary from")
    return "".join(sorted(chars))


def corpus_characters(source, cache_dir: str | Path) -> str:
    """The characters of ``source``'s text, sorted: one pass over it, remembered in ``cache_dir`` by the
    source's fingerprint (a changed file is read again), for a vocabulary several sources share (a mixture's)."""
    fingerprint = source.fingerprint()
    name = hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir).expanduser() / "characters" / f"{name}.json"
    try:
        remembered = json.loads(path.read_text(encoding="utf-8"))
        if remembered["source"] == fingerprint:
            return remembered["characters"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # not read before, or not readable: read the text
    chars = _characters_of(source)
    with contextlib.suppress(OSError):  # not remembered: read again next time
        atomic_write_bytes(json.dumps({"source": fingerprint, "characters": chars}).encode(), path)
    return chars


def _batches(documents: Iterator[tuple[str, Piece | None]]) -> Iterator[tuple[str, int, list[Piece], int]]:
    """(split, batch number within the split, pieces, bytes): about BATCH_BYTES of text each, cut the same
    way on every run, so a batch number names the same text when a run resumes. A source yields
    (split, None) where a section of one split ends (its validation files), so that split's last batch
    goes out then, not after the rest of the corpus."""
    pieces = {split: [] for split in SPLITS}
    sizes = dict.fromkeys(SPLITS, 0)
    numbers = dict.fromkeys(SPLITS, 0)
    for split, piece in documents:
        if piece is not None:
            pieces[split].append(piece)
            sizes[split] += piece.nbytes
        if pieces[split] and (piece is None or sizes[split] >= BATCH_BYTES):  # None: the split's section ended
            yield split, numbers[split], pieces[split], sizes[split]
            pieces[split], sizes[split] = [], 0
            numbers[split] += 1
    for split in SPLITS:
        if pieces[split]:
            yield split, numbers[split], pieces[split], sizes[split]


_WORKER_TOKENIZER: tuple[str, object] | None = None


def encode_pieces(spec: dict, items: list[tuple[str, bool, bool]]) -> np.ndarray:
    """The ids of the pieces (text, whether it goes on a document begun before, whether it ends one), each
    document followed by the end-of-text id (a character vocabulary has none: its documents are joined as
    they are). Runs in worker processes: the tokenizer is built once."""
    global _WORKER_TOKENIZER
    cache_key = json.dumps(spec, sort_keys=True)
    if _WORKER_TOKENIZER is None or _WORKER_TOKENIZER[0] != cache_key:
        _WORKER_TOKENIZER = (cache_key, tokenizer_from_spec(spec))
    tokenizer = _WORKER_TOKENIZER[1]
    dtype = token_dtype(tokenizer.vocab_size)
    eos = None if tokenizer.eos_id is None else np.array([tokenizer.eos_id], dtype=dtype)
    arrays: list[np.ndarray] = []
    for text, continues, ends_document in items:
        arrays.append(tokenizer.encode_corpus_array(text, continues))
        if ends_document and eos is not None:
            arrays.append(eos)
    # One pass to the shard's type (every id is below vocab_size, so it fits).
    return np.concatenate(arrays, dtype=dtype, casting="unsafe") if arrays else np.zeros(0, dtype)


class _Progress:
    """A progress bar over the source's bytes, with tokens and tokens/s (tqdm, on stderr)."""

    def __init__(self, total_bytes: int, index: dict, enabled: bool):
        from tqdm import tqdm

        self.start, self.count = time.perf_counter(), 0
        self.bar = tqdm(
            total=total_bytes,
            unit="B",
            unit_scale=True,
            desc=f"tokenising ({index['tokenizer']['kind']})",
            disable=not enabled,
            file=sys.stderr,
            mininterval=1.0,
        )

    def advance(self, nbytes: int) -> None:
        self.bar.update(nbytes)

    def set_total(self, total_bytes: int) -> None:
        """The bytes to read, learnt on the way: the bar shows its share and time left from then on."""
        self.bar.total = total_bytes
        self.bar.refresh()

    def tokens(self, count: int) -> None:
        self.count += count
        rate = self.count / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{self.count:,} tokens, {rate:,.0f} tokens/s", refresh=False)

    def close(self) -> None:
        self.bar.close()
