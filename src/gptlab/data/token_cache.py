"""Token ids of a corpus's train and validation splits, cached on disk between runs.

A cache file is named by a key over everything the ids depend on: the corpus text itself (its sha256),
the tokenizer's identity (kind, and for characters the vocabulary) and the split ratio. A changed
corpus, tokenizer or split therefore never finds stale ids; it finds no file and tokenises afresh.

The cache only ever saves time: a damaged file is ignored (one warning) and rewritten, and a cache folder
that cannot be written to means tokenising every run, never a failed run. Files are plain tensors, written
atomically and read with ``torch.load(weights_only=True)``, so no pickled code is ever run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from gptlab.core.errors import first_line
from gptlab.core.files import atomic_torch_save

log = logging.getLogger(__name__)

# Bump when the stored layout or the meaning of the ids changes: old files then simply stop matching.
CACHE_FORMAT = 1


def cache_key(text: str, tokenizer_identity: dict, train_ratio: float) -> str:
    identity = {
        "format": CACHE_FORMAT,
        "text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "tokenizer": tokenizer_identity,
        "train_ratio": float(train_ratio),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()


def cache_path(cache_dir: str | Path, corpus: str, kind: str, key: str) -> Path:
    # The key's first 16 hex digits keep names readable; the whole key is stored inside and checked.
    return Path(cache_dir).expanduser() / "tokens" / f"{corpus}-{kind}-{key[:16]}.pt"


def load_splits(path: Path, key: str, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached (train, val) ids, or None when there is no usable file (missing, damaged, another key)."""
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
        splits = _checked(stored, key, vocab_size)
    except Exception as err:  # whatever is wrong with the file, tokenising again is the remedy
        log.warning(
            "token cache %s is unusable (%s); tokenising again and rewriting it", path, first_line(err)
        )
        return None
    return splits


def save_splits(path: Path, key: str, train: torch.Tensor, val: torch.Tensor) -> None:
    # int32 halves the file (every vocabulary here is far below 2**31); ids come back as int64.
    payload = {"key": key, "train": train.to(torch.int32), "val": val.to(torch.int32)}
    try:
        atomic_torch_save(payload, path)
    except OSError as err:
        log.warning(
            "token cache not written to %s (%s); tokenising on every run: point data.cache_dir (or "
            "GPTLAB_CACHE_DIR) at a writable folder, or set data.cache_dir=null",
            path.parent,
            first_line(err),
        )


def _checked(stored: object, key: str, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(stored, dict) or stored.get("key") != key:
        raise ValueError("not a token cache of this corpus, tokenizer and split")
    splits = []
    for name in ("train", "val"):
        ids = stored.get(name)
        if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"its {name} ids are not a 1-D integer tensor")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
            raise ValueError(f"its {name} ids fall outside the {vocab_size}-token vocabulary")
        splits.append(ids.to(torch.long))
    return splits[0], splits[1]
