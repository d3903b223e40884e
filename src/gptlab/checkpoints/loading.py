"""Loading trained models for generation and export: our Lightning checkpoints and pretrained GPT-2 weights.

Reads checkpoints with ``torch.load(weights_only=True)`` and rebuilds the model from the plain-dict
hyperparameters saved in them, without importing Lightning (a few seconds saved on every CLI call).
Everything a user can get wrong raises :class:`GptlabError` with a message saying how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch import nn

from gptlab.checkpoints.compatibility import load_weights, require_gptlab_checkpoint
from gptlab.checkpoints.paths import checkpoint_file, names_a_gptlab_checkpoint
from gptlab.checkpoints.reader import load_checkpoint_safely
from gptlab.core.devices import available_gpu, require_device
from gptlab.core.errors import ConfigError, GptlabError
from gptlab.data.tokenizers import tokenizer_from_spec
from gptlab.models.compile import without_compile_prefix
from gptlab.models.language_model import language_model
from gptlab.training.finetune import apply_finetune, merge_finetune

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    # The longest sequence the model was trained on (its training window): generation's default reach.
    trained_window: int
    source: str
    checkpoint: dict = field(default_factory=dict, repr=False)

    @property
    def context_length(self) -> int:
        """The most positions the model has (its position table), trained or not."""
        return int(self.model.context_length)


def trained_window(checkpoint: dict, model: nn.Module) -> int:
    """The window a checkpoint's model was trained on (train.py records it); older checkpoints and
    pretrained weights: the whole context."""
    window = (checkpoint.get("hyper_parameters") or {}).get("train_window")
    return min(int(window), int(model.context_length)) if window else int(model.context_length)


def resolve_device(name: str | None) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; anything else must be a device torch knows."""
    if name in (None, "auto"):
        return torch.device(available_gpu() or "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device={name!r} is not a device name; use auto, cpu, cuda, cuda:1 or mps"
        ) from None
    require_device(device.type, f"device={name} asked for", "use device=cpu or auto")
    return device


def resolve_dtype(name: str | None) -> torch.dtype:
    if name is None:
        return torch.float32
    if name not in DTYPES:
        raise ConfigError(f"dtype={name!r} is not supported; use one of {', '.join(DTYPES)}")
    return DTYPES[name]


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> tuple[Path, dict]:
    """Load a gptlab checkpoint as a dict, checking that it is one (``key``: the setting that named it)."""
    path = checkpoint_file(path, key=key)
    # weights_only: a file carrying code is refused; each way a file can be unusable has its own message.
    checkpoint = load_checkpoint_safely(path)
    require_gptlab_checkpoint(path, checkpoint)
    return path, checkpoint


def model_state_dict(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The model's weights from a LanguageModelModule state dict (keys ``model.*``)."""
    weights = {
        key.removeprefix("model."): value for key, value in checkpoint["state_dict"].items() if key.startswith("model.")
    }
    return without_compile_prefix(weights)


def load_checkpoint_model(
    path: str | Path, key: str = "ckpt_path", model_changes: dict | None = None
) -> tuple[nn.Module, object, dict]:
    """Rebuild (model, tokenizer, checkpoint) from one of our checkpoints, on the CPU, in eval mode.
    ``model_changes``: constructor arguments that differ from the checkpoint's and leave the weights as they
    are (a new run's dropout)."""
    path, checkpoint = read_checkpoint(path, key)
    hparams = checkpoint["hyper_parameters"]
    unknown = sorted(set(model_changes or {}) - set(hparams["model"]))
    if unknown:
        raise ConfigError(f"{key}={path}: its model has no {', '.join(f'model.{k}' for k in unknown)} to change")
    model_cfg = {**hparams["model"], **(model_changes or {})}
    model = apply_finetune(instantiate(model_cfg, _convert_="all"), hparams.get("finetune"))
    load_weights(path, model, model_state_dict(checkpoint))
    tokenizer = tokenizer_from_spec(dict(hparams["tokenizer"]))
    # LoRA adapters are folded into the weights: the same outputs, a plain (exportable, faster) model.
    model = merge_finetune(model).eval()
    return model, tokenizer, checkpoint


def require_one_model_source(ckpt_path: str | None, init_from: str | None) -> None:
    """Exactly one of ``ckpt_path`` (our checkpoint) and ``init_from`` (pretrained weights)."""
    if ckpt_path and init_from:
        raise ConfigError(
            "pass either ckpt_path= (a gptlab checkpoint) or init_from= (GPT-2 weights), not both"
        )
    if not ckpt_path and not init_from:
        raise ConfigError(
            "no model named: pass ckpt_path=<a .ckpt written by train.py, or its run folder> "
            "or init_from=<gpt2, gpt2-medium, gpt2-large, gpt2-xl or a Hugging Face folder>"
        )


def load_for_generation(
    ckpt_path: str | None = None,
    init_from: str | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """A model and tokenizer from our checkpoint (``ckpt_path``) or from GPT-2 weights (``init_from``)."""
    require_one_model_source(ckpt_path, init_from)
    if init_from and names_a_gptlab_checkpoint(str(init_from)):
        ckpt_path = init_from  # a run of train.py, as train.py's init_from takes it: its weights either way
    if ckpt_path:
        model, tokenizer, checkpoint = load_checkpoint_model(ckpt_path)
        source = str(ckpt_path)
    else:
        from gptlab.hub.gpt2_import import load_pretrained_gpt, tokenizer_for_pretrained

        model, _ = load_pretrained_gpt(str(init_from))
        tokenizer = tokenizer_for_pretrained(str(init_from))
        checkpoint, source = {}, str(init_from)
    model = model.to(device=device, dtype=dtype).eval()
    if tokenizer.vocab_size > language_model(model).vocab_size:
        raise GptlabError(
            f"{source}: the tokenizer has {tokenizer.vocab_size} ids but the model only "
            f"{language_model(model).vocab_size}"
        )
    return LoadedModel(model, tokenizer, trained_window(checkpoint, model), source, checkpoint)


def load_pretrained_causal_lm(
    model_cfg: dict, tokenizer_setting: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> LoadedModel:
    """``model=hf_causal_lm model.pretrained=<folder>``: any transformers causal LM, read with the tokenizer
    ``data.tokenizer`` names (as train.py reads it), which must be the model's own."""
    from gptlab.data.tokenizers import tokenizer_from_setting
    from gptlab.models.hf_causal_lm import pretrained_reading

    pretrained = model_cfg.get("pretrained")
    if model_cfg.get("_target_") != "gptlab.models.hf_causal_lm.HFCausalLM" or not pretrained:
        raise ConfigError(
            "model= here evaluates trained weights: model=hf_causal_lm model.pretrained=<a Hugging Face folder>; "
            "a model trained by train.py is named by ckpt_path=<its run folder>"
        )
    if tokenizer_setting == "char":
        raise ConfigError(
            f"model.pretrained={pretrained} reads its own token ids, not the characters of data's char tokenizer; "
            f"set data.tokenizer={pretrained}"
        )
    tokenizer = tokenizer_from_setting(tokenizer_setting)
    model = pretrained_reading(str(pretrained), tokenizer, model_cfg.get("context_length"))
    model = model.to(device=device, dtype=dtype).eval()
    return LoadedModel(model, tokenizer, model.context_length, str(pretrained))

