"""Keep API keys and tokens out of everything a run writes: configs, logs, checkpoints and the console.

Secrets are the values of environment variables named as credentials (WANDB_API_KEY, HF_TOKEN,
*_SECRET, *_PASSWORD, ...), including those read from a ``.env`` file. Every console and log line is
scrubbed of them, config keys named as credentials are masked before a config is logged, and the config
files Hydra saved for the run are scrubbed when the job starts.

A name is a credential's by its words, not its letters: ``hf_token`` and ``wandb.api_key`` are, while
``data.tokenizer``, ``max_new_tokens`` and ``tokens_seen`` are ordinary settings and are logged as they are.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from gptlab.core.files import atomic_write_bytes

# Words that name a credential on their own, and pairs of adjacent words that do.
CREDENTIAL_WORDS = frozenset(
    {"token", "secret", "password", "passwd", "passphrase", "credential", "credentials", "auth", "apikey"}
)
CREDENTIAL_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key")})
MASK = "***"
MIN_SECRET_LENGTH = 8  # shorter values ("1", "true") would mask ordinary text


def name_words(name: str) -> list[str]:
    """``WANDB_API_KEY`` -> wandb, api, key; ``hubToken`` -> hub, token; ``a.b-c`` -> a, b, c."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [word.lower() for word in re.split(r"[^A-Za-z0-9]+", spaced) if word]


def looks_secret(name: str) -> bool:
    """Whether a variable or config key names a credential."""
    words = name_words(name)
    return any(word in CREDENTIAL_WORDS for word in words) or any(
        pair in CREDENTIAL_PAIRS for pair in zip(words, words[1:], strict=False)
    )


def load_dotenv(path: str | Path = ".env") -> list[str]:
    """Read ``path`` (python-dotenv's format) into the environment, which wins; return the names it holds."""
    from dotenv import dotenv_values

    names = []
    for name, value in dotenv_values(path).items():
        if value is not None and name not in os.environ:
            os.environ[name] = value
        names.append(name)
    return names


def secret_values() -> list[str]:
    values = {v for k, v in os.environ.items() if looks_secret(k) and len(v) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)  # longest first: a secret containing another is masked whole


def redact(text: str, secrets: list[str] | None = None) -> str:
    for secret in secret_values() if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_config(value: Any, secrets: list[str] | None = None) -> Any:
    """A copy of a plain config (dicts, lists, scalars) with secret-looking keys and secret values masked."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(value, dict):
        return {
            k: (MASK if looks_secret(str(k)) and v not in (None, "") else redact_config(v, secrets))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_config(v, secrets) for v in value)
    if isinstance(value, str):
        return redact(value, secrets)
    return value


def redact_file(path: str | Path) -> None:
    """Mask secret values in a text file that was written before we could stop them (Hydra's configs)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    cleaned = redact(text)
    if cleaned != text:
        atomic_write_bytes(cleaned.encode("utf-8"), path)


class RedactingStream:
    """Wraps sys.stdout / sys.stderr: what is written goes out with secret values masked."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def guard_outputs() -> None:
    """Scrub secrets from the console and from every log handler configured so far."""
    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout)
    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr)
    loggers = [logging.getLogger()] + [
        logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
    ]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())


def scrub_saved_configs(output_dir: str | Path) -> None:
    for path in Path(output_dir, ".hydra").glob("*.yaml"):
        redact_file(path)
