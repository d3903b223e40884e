"""Range checks of config values, each raising one line that names the key and a value that works.

Used by the schemas (gptlab.config) and by the classes built from them when they are used from Python
(GPTConfig), so a rule is written once. No torch here: configs are checked before it is imported.
"""

from __future__ import annotations

from collections.abc import Iterable

from gptlab.core.errors import ConfigError


def at_least(key: str, value: float | None, minimum: float, why: str = "") -> None:
    """``value`` (when set) must be >= ``minimum``; ``why`` says what the key means, for the message."""
    if value is not None and value < minimum:
        raise ConfigError(f"{key} must be >= {minimum}{why}, got {value}; e.g. {key}={minimum}")


# The seeds the random generators take: train.py seeds numpy's too (Lightning's seed_everything), generation
# only torch's. Outside them the run ended in a traceback (numpy's ValueError, torch's OverflowError), and
# a server's batch failed for every request in it.
TRAIN_SEEDS = (0, 2**32 - 1)
TORCH_SEEDS = (-(2**63), 2**64 - 1)


def seed_within(key: str, value: int | None, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if value is not None and not low <= value <= high:
        raise ConfigError(f"{key} must be between {low} and {high}, got {value}; e.g. {key}=1337")


def positive(key: str, value: float | None, example: str) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{key} must be positive, got {value}; e.g. {key}={example}")


def fraction(key: str, value: float | None, *, open_low: bool, example: float) -> None:
    """A share of something: in (0, 1) when ``open_low``, else in [0, 1)."""
    if value is None:
        return
    inside = 0.0 < value < 1.0 if open_low else 0.0 <= value < 1.0
    if not inside:
        where = "strictly between 0 and 1" if open_low else "in [0, 1)"
        raise ConfigError(f"{key} must be {where} (e.g. {example}), got {value}")


def one_of(key: str, value: object, choices: Iterable[object]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{key} must be one of {choices}, got {value!r}")


def positive_ints(prefix: str, **values: int | None) -> None:
    for name, value in values.items():
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"{prefix}{name} must be a positive integer, got {value!r}")


def heads_divide(emb_dim: int, n_heads: int) -> None:
    if emb_dim % n_heads:
        raise ConfigError(
            f"model.emb_dim={emb_dim} is not divisible by model.n_heads={n_heads}; "
            f"pick n_heads that divides emb_dim (e.g. model.n_heads={_nearest_divisor(emb_dim, n_heads)})"
        )


def drop_rate(value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"model.drop_rate must be in [0, 1), got {value}")


def _nearest_divisor(n: int, near: int) -> int:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return min(divisors, key=lambda d: abs(d - near))
