"""``compile=true``: torch.compile for training, without renaming a single parameter.

``torch.compile(model)`` returns a wrapper whose state dict prefixes every key with ``_orig_mod.``, which
then leaks into checkpoints and exports. Each model compiles itself in place instead
(``LanguageModel.compile_for_training``: our GPT its blocks, others ``nn.Module.compile``), which keeps the
names as they are; loading still strips the prefix from checkpoints made elsewhere
(:func:`without_compile_prefix`).
"""

from __future__ import annotations

import shutil

from torch import nn

from gptlab.core.errors import ConfigError
from gptlab.models.language_model import language_model

# torch.compile(model) wraps the model and prefixes every state-dict key with this.
COMPILE_PREFIX = "_orig_mod."


def without_compile_prefix(state_dict: dict) -> dict:
    """A state dict with plain parameter names, whether or not it came from a ``torch.compile`` wrapper."""
    return {key.replace(COMPILE_PREFIX, ""): value for key, value in state_dict.items()}


def check_compiler(device_type: str) -> None:
    """Inductor writes C++ on CPU: say so up front instead of failing deep inside the first step."""
    if device_type == "cpu" and not any(shutil.which(cxx) for cxx in ("g++", "clang++", "c++")):
        raise ConfigError(
            "compile=true on CPU needs a C++ compiler (g++ or clang++) and none is on PATH; "
            "install one (e.g. apt install g++) or run with compile=false"
        )


def compile_model(model: nn.Module, device_type: str = "cpu") -> None:
    """Compile the gptlab model inside ``model`` (past peft's LoRA wrapper) in place for training."""
    check_compiler(device_type)
    language_model(model).compile_for_training()
