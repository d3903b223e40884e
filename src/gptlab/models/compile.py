"""``compile=true``: torch.compile for training, without renaming a single parameter.

``torch.compile(model)`` returns a wrapper whose state dict prefixes every key with ``_orig_mod.``, which
then leaks into checkpoints and exports. Compiling in place (our GPT's blocks, or ``nn.Module.compile``
for other models) keeps the names as they are; loading still strips the prefix from checkpoints made
elsewhere (:func:`without_compile_prefix`).
"""

from __future__ import annotations

import shutil

from torch import nn

from gptlab.core.errors import ConfigError
from gptlab.models.gpt import GPT

# torch.compile(model) wraps the model and prefixes every state-dict key with this.
COMPILE_PREFIX = "_orig_mod."


def without_compile_prefix(state_dict: dict) -> dict:
    """A state dict with plain parameter names, whether or not it came from a ``torch.compile`` wrapper."""
    return {key.replace(COMPILE_PREFIX, ""): value for key, value in state_dict.items()}


def _base_model(model: nn.Module) -> nn.Module:
    """The model under peft's LoRA wrapper, if any (the adapters live inside its layers)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def check_compiler(device_type: str) -> None:
    """Inductor writes C++ on CPU: say so up front instead of failing deep inside the first step."""
    if device_type == "cpu" and not any(shutil.which(cxx) for cxx in ("g++", "clang++", "c++")):
        raise ConfigError(
            "compile=true on CPU needs a C++ compiler (g++ or clang++) and none is on PATH; "
            "install one (e.g. apt install g++) or run with compile=false"
        )


def compile_model(model: nn.Module, device_type: str = "cpu") -> None:
    """Compile ``model`` in place for training.

    Our GPT compiles its transformer block once (regional compilation: every block runs the same graph, so
    compiling costs one block's time, not twelve); the KV-cached decoding path and the fused loss stay eager.
    Any other model compiles its whole forward.
    """
    check_compiler(device_type)
    base = _base_model(model)
    if isinstance(base, GPT):
        base.compile_blocks()
    else:
        model.compile()
