"""The corpus registry: where each text comes from, its checksum, and how it is found on disk.

A corpus is read from the data folder if it is there; otherwise it is fetched from its canonical URL,
checked against its sha256 and written atomically into the data folder. Offline and missing, it fails
with one message that says where to put the file.
"""

from __future__ import annotations

import hashlib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gptlab.core.errors import ConfigError, DataError
from gptlab.core.files import atomic_write_bytes


@dataclass(frozen=True)
class Corpus:
    filename: str
    url: str
    sha256: str
    option: str  # the data= option that reads it, as messages name it (conf/data/<option>.yaml)
    char_option: str | None = None  # the option that reads it with the character tokenizer, if one does


CORPORA: dict[str, Corpus] = {
    "tinyshakespeare": Corpus(
        filename="tinyshakespeare.txt",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        option="shakespeare",
        char_option="shakespeare_char",
    ),
    "the-verdict": Corpus(
        filename="the-verdict.txt",
        url="https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt",
        sha256="b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
        option="verdict",
    ),
}


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def corpus_path(name: str, data_dir: str | Path) -> Path:
    """Path of the verified corpus file, fetching it into ``data_dir`` first if it is not there."""
    if name not in CORPORA:
        raise ConfigError(f"unknown corpus {name!r}; known corpora: {', '.join(CORPORA)}")
    corpus = CORPORA[name]
    path = Path(data_dir).expanduser() / corpus.filename
    if not path.exists():
        _fetch(corpus, path)
    data = path.read_bytes()
    if not data:
        raise DataError(
            f"corpus file {path} is empty; delete it (it is fetched again) or copy the real file there"
        )
    if sha256_of(data) != corpus.sha256:
        raise DataError(
            f"corpus file {path} does not match its sha256 {corpus.sha256[:12]}...; it is corrupted or a "
            f"different text: delete it so it is fetched again, or replace it with {corpus.url}"
        )
    return path


def read_corpus(name: str, data_dir: str | Path) -> str:
    return corpus_path(name, data_dir).read_text(encoding="utf-8")


def _fetch(corpus: Corpus, path: Path) -> None:
    try:
        with urllib.request.urlopen(corpus.url, timeout=30) as response:
            data = response.read()
    except OSError as err:
        raise DataError(
            f"corpus {corpus.filename} is not in {path.parent} and could not be downloaded ({err}); "
            f"put the file there (from {corpus.url}) or point data.data_dir / GPTLAB_DATA_DIR at a folder holding it"
        ) from None
    if sha256_of(data) != corpus.sha256:
        raise DataError(f"downloaded {corpus.url} does not match its expected sha256; nothing was written")
    atomic_write_bytes(data, path)  # temporary file, fsync, rename: a crash never leaves half a corpus
