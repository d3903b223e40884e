"""Whether a checkpoint fits what is asked of it: one of ours at all, and, to resume, the same model shape
and tokenizer as the run. Each refusal says what the checkpoint holds and how to use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gptlab.checkpoints.reader import CheckpointError


def require_gptlab_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """A checkpoint written by train.py: weights and the hyperparameters that rebuild its model."""
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if (
        not isinstance(hparams, dict)
        or not {"model", "tokenizer"} <= hparams.keys()
        or "state_dict" not in checkpoint
    ):
        raise CheckpointError(
            f"{path} is not a gptlab checkpoint: it lacks the state_dict and the model/tokenizer "
            "hyperparameters that train.py saves; pass a .ckpt file written by train.py"
        )
    if "_target_" not in hparams["model"]:
        raise CheckpointError(f"{path}: hyper_parameters.model has no _target_, so the model cannot be rebuilt")


def check_resumable(
    path: Path, checkpoint: dict[str, Any], expected: dict[str, torch.Tensor], tokenizer: dict[str, Any]
) -> None:
    """Refuse to resume a run whose model (state dict ``expected``) or tokenizer differ from the checkpoint's."""
    hparams = checkpoint.get("hyper_parameters") or {}
    saved_tokenizer = hparams.get("tokenizer")
    if saved_tokenizer is not None and saved_tokenizer != tokenizer:
        raise CheckpointError(
            f"checkpoint {path} was trained with the {saved_tokenizer.get('kind')} tokenizer, but this run uses "
            f"{tokenizer.get('kind')}; resume with the data= it was trained on"
        )
    saved = checkpoint["state_dict"]
    for name, tensor in expected.items():
        if name not in saved or tuple(saved[name].shape) != tuple(tensor.shape):
            there = tuple(saved[name].shape) if name in saved else "missing"
            shape = {k: v for k, v in (hparams.get("model") or {}).items() if k != "_target_"}
            raise CheckpointError(
                f"checkpoint {path} holds a model of another shape ({name}: {there} there, "
                f"{tuple(tensor.shape)} here); resume with the model it was trained with: {shape}"
            )


def load_weights(path: Path, model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """``model.load_state_dict`` with torch's many-line mismatch report as one line."""
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise CheckpointError(
            f"{path}: the weights do not fit the model its hyperparameters describe ({' '.join(first[:2])[:300]})"
        ) from None
