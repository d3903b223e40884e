"""A key that no schema or constructor takes: one message wherever it is found (a misspelt override, a key
added with ``+`` that nothing would read, a keyword argument a class does not take)."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Iterator

from omegaconf import DictConfig, OmegaConf

from gptlab.core.errors import ConfigError


def unknown_key_message(path: str, known: Iterable[str], owner: str, hint: str = "", if_none_close: str = "") -> str:
    """'scheduler.warmup is not a setting of scheduler; did you mean scheduler.warmup_steps?', or the settings
    there are when none is close. ``hint`` ends the line; ``if_none_close`` too, where no setting is close
    (how to pass on a key the schema does not list: a typo needs no such advice)."""
    parent, _, key = path.rpartition(".")
    known = sorted({k for k in known if not k.startswith("_")})
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        suggestion = f"did you mean {parent + '.' if parent else ''}{close[0]}?"
    else:
        suggestion = f"it takes: {', '.join(known)}{if_none_close}"
    return f"{path} is not a setting of {owner}; {suggestion}{hint}"


def open_to(schema: type | None) -> str | None:
    """What a schema hands the keys it does not list to (TrainerConfig: Lightning's Trainer), or None when
    such a key would be read by nothing."""
    return getattr(schema, "OTHER_KEYS_GO_TO", None)


def _added_keys(node: DictConfig, path: str) -> Iterator[tuple[str, type]]:
    schema = OmegaConf.get_type(node)
    fields = {f.name for f in dataclasses.fields(schema)} if dataclasses.is_dataclass(schema) else None
    for key, value in node.items_ex(resolve=False):
        child = f"{path}.{key}" if path else str(key)
        if fields is not None and key not in fields and not open_to(schema):
            yield child, schema
        if isinstance(value, DictConfig):
            yield from _added_keys(value, child)


def refuse_added_keys(cfg: DictConfig) -> None:
    """A key added with ``+`` (or ``++``) where the schema has no such setting is read by nothing: the run
    would go on without it. Refuse it, with the setting it may have meant."""
    command = OmegaConf.get_type(cfg).__name__.removesuffix("Config").lower() + ".py"  # TrainConfig: train.py
    for path, schema in _added_keys(cfg, ""):
        parent = path.rpartition(".")[0]
        known = [f.name for f in dataclasses.fields(schema)]
        raise ConfigError(
            unknown_key_message(path, known, parent or command, hint=" (a key added with + is read by nothing here)")
        )
