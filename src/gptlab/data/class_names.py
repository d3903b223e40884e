"""The names configs give the data classes (``data._target_``), resolved with or without Lightning.

A data module file lists its classes' Lightning names (``LIGHTNING_NAMES``: ``{"TextDataModule": TextData}``)
and resolves them with the module ``__getattr__`` that :func:`lightning_getattr` makes, so Hydra's instantiate of a
config builds the twin a Trainer needs. Commands that only read data (eval.py, prepare.py, a mixture's
sources) build the plain class from the same config with :func:`data_class`, and never import Lightning.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lightning_getattr(module_name: str, lightning_names: dict[str, type]) -> Callable[[str], type]:
    """A data module file's ``__getattr__``: the LightningDataModule twin its configs name by ``name``."""

    def twin_named(name: str) -> type:
        data_class = lightning_names.get(name)
        if data_class is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        from gptlab.data.window_datamodule import lightning_twin  # Lightning, for a Trainer's run only

        return lightning_twin(data_class, name)

    return twin_named


def data_class(target: Any) -> Any:
    """The Lightning-free class of a data config's ``_target_`` (a class of your own: as it is)."""
    if not isinstance(target, str):
        return target
    module_name, _, name = target.rpartition(".")
    module = importlib.import_module(module_name)
    plain = getattr(module, "LIGHTNING_NAMES", {}).get(name)
    return plain if plain is not None else getattr(module, name)


def read_data(config: Any, **settings: Any) -> Any:
    """Hydra's instantiate of a data config, as its Lightning-free class (a command that only reads data)."""
    from hydra.utils import instantiate

    return instantiate(config, _target_=data_class(config["_target_"]), **settings)
