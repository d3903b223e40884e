"""Shape checks shared by the models, raising errors that name the config key to change."""

from gptlab.core.errors import ConfigError


def check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"model.{name} must be a positive integer, got {value!r}")


def check_heads_divide(emb_dim: int, n_heads: int) -> None:
    if emb_dim % n_heads:
        raise ConfigError(
            f"model.emb_dim={emb_dim} is not divisible by model.n_heads={n_heads}; "
            f"pick n_heads that divides emb_dim (e.g. model.n_heads={_nearest_divisor(emb_dim, n_heads)})"
        )


def check_drop_rate(drop_rate: float) -> None:
    if not 0.0 <= drop_rate < 1.0:
        raise ConfigError(f"model.drop_rate must be in [0, 1), got {drop_rate}")


def check_window(seq_len: int, context_length: int) -> None:
    if seq_len > context_length:
        raise ConfigError(
            f"input of {seq_len} tokens is longer than model.context_length={context_length}; "
            f"lower data.max_length to at most {context_length} or raise model.context_length"
        )


def _nearest_divisor(n: int, near: int) -> int:
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    return min(divisors, key=lambda d: abs(d - near))
