"""The data classes as LightningDataModules, the kind of object a Trainer fits on.

Each data class of gptlab.data is Lightning-free (gptlab.data.window_data); its twin adds Lightning's base
and nothing else, and keeps the name the configs have always given (``data._target_``, also in every run's
.hydra/config.yaml): ``gptlab.data.datamodule.TextDataModule`` is TextData's twin, made when first named
(gptlab.data.class_names). Lightning keys a data module's state in a checkpoint by its class name, so the
twins' names are also what resumes older checkpoints.
"""

from __future__ import annotations

import lightning as L

from gptlab.data.window_data import WindowData


class WindowDataModule(WindowData, L.LightningDataModule):
    """WindowData a Trainer can fit on: every twin is one of these (a data class of your own may be too)."""


_twins: dict[type, type] = {}


def lightning_twin(data_class: type, name: str) -> type:
    """``data_class`` with Lightning's base, named ``name``; one class per data class (pickle finds it by name)."""
    if data_class not in _twins:
        namespace = {"__module__": data_class.__module__, "__qualname__": name, "__doc__": data_class.__doc__}
        _twins[data_class] = type(name, (data_class, WindowDataModule), namespace)
    return _twins[data_class]


def as_lightning_data(data: WindowData, target: str) -> L.LightningDataModule:
    """``data``, read before Lightning's import as its plain class (train.py's preflight), as the twin its
    config names (``target``: ``data._target_``), which a Trainer fits on. The same object, its class
    switched: a twin adds only Lightning's base, whose attributes are set here, so nothing read or
    tokenised is done again."""
    if isinstance(data, L.LightningDataModule):
        return data  # a data class of your own that is one already
    data.__class__ = lightning_twin(type(data), str(target).rpartition(".")[2])
    L.LightningDataModule.__init__(data)  # runs Lightning's bases' __init__ only (the MRO after it)
    return data
