"""Lightning Trainers for in-process tests, quiet by default: no logger, checkpoints, progress bar or
model summary unless a test asks for them (its settings win)."""

from __future__ import annotations

import lightning as L

QUIET = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False}


def quiet_trainer(**settings) -> L.Trainer:
    return L.Trainer(**{"accelerator": "cpu", "devices": 1, **QUIET, **settings})
