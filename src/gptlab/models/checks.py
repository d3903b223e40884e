"""The check a model makes on every input: a window no longer than its context. (Checks of a model's
settings live with its config schema: gptlab.config.model.)"""

from gptlab.core.errors import ConfigError


def check_window(seq_len: int, context_length: int) -> None:
    if seq_len > context_length:
        raise ConfigError(
            f"input of {seq_len} tokens is longer than model.context_length={context_length}; "
            f"lower data.max_length to at most {context_length} or raise model.context_length"
        )
