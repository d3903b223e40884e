"""Every use of a private Lightning, Hydra or torch name, one module per library (``compat.lightning``,
``compat.hydra``, ``compat.torch``), Hydra's Optuna sweeper subclassed (``compat.optuna_sweeper``), and the
workarounds for torchmetrics' import (``compat.torchmetrics``) and wandb's pandas import (``compat.wandb``): what
each patch works around, and the version it was written for.

Nothing else in gptlab reaches into these libraries' internals. Importing a module here warns once when the
installed version is not the one its patches were written (and tested) against.
"""

from __future__ import annotations

import warnings


def warn_if_untested(package: str, installed: str, written_for: str, relies_on: str) -> None:
    if installed != written_for:
        warnings.warn(
            f"gptlab's {package} patches were written for {package} {written_for} and this is {installed}: "
            f"if {relies_on} misbehave, install {package}=={written_for} (pip install -c constraints.txt -e .)",
            stacklevel=3,
        )
