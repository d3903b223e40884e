"""Any transformers causal language model (AutoModelForCausalLM) as a gptlab model: ids -> logits.

The checkpoint keeps only the model's Hugging Face config (plain data); weights come from the
checkpoint's state dict. Pretrained weights are loaded once, at the start of training, by training.py.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from gptlab.core.errors import ConfigError, GptlabError, first_line
from gptlab.models.checks import check_window
from gptlab.models.language_model import LanguageModel, is_peft_model

# Config keys that name the context window, by model family.
_CONTEXT_KEYS = ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length")


def _auto_config(hf_config: dict):
    from transformers import AutoConfig

    settings = dict(hf_config)
    model_type = settings.pop("model_type", None)
    if not model_type:
        raise ConfigError("model.hf_config needs a model_type (e.g. gpt2, llama); see transformers' AutoConfig")
    try:
        return AutoConfig.for_model(model_type, **settings)
    except ValueError as err:
        raise ConfigError(f"model.hf_config: {err}") from None


def load_pretrained_hf(name_or_path: str) -> nn.Module:
    """A transformers causal LM from a local folder, or from the Hub by name when there is a network."""
    from transformers import AutoModelForCausalLM

    local = Path(name_or_path).expanduser()
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(local) if local.is_dir() else name_or_path, local_files_only=offline, dtype=torch.float32
        )
    except (OSError, ValueError) as err:
        raise GptlabError(
            f"model.pretrained={name_or_path} could not be loaded ({first_line(err)}); give a local Hugging Face "
            "folder (config.json + weights) or a Hub name with a network"
        ) from None


class HFCausalLM(LanguageModel):
    """Wraps ``AutoModelForCausalLM``: around ``model``, loaded from ``pretrained``, or built from ``hf_config``."""

    lora_targets = "all-linear"  # peft knows the linear layers of transformers models

    def __init__(
        self,
        hf_config: dict | None = None,
        context_length: int | None = None,
        model: nn.Module | None = None,
        pretrained: str | None = None,
        vocab_size: int | None = None,
    ):
        super().__init__()
        if model is None and pretrained:
            model = load_pretrained_hf(pretrained)
        if model is None:
            if not hf_config:
                raise ConfigError("model=hf_causal_lm needs model.pretrained=<Hub name or folder> or model.hf_config")
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_config(_auto_config(hf_config))
        self.hf = model
        config = model.config.to_dict()
        self.context_length = context_length or next((config[k] for k in _CONTEXT_KEYS if config.get(k)), None)
        if not self.context_length:
            raise ConfigError("this model's config names no context length; set model.context_length")
        # The tokenizer's vocabulary. An embedding with more rows (padding) has its extra logits cut off,
        # so those ids are never predicted, sampled or scored.
        self.vocab_size = vocab_size or self.embedding_rows
        if self.vocab_size > self.embedding_rows:
            raise ConfigError(
                f"the tokenizer has {self.vocab_size} ids but the model embeds only {self.embedding_rows}"
            )

    @property
    def embedding_rows(self) -> int:
        return self.hf.get_input_embeddings().num_embeddings

    def config_dict(self) -> dict:
        """Constructor arguments that rebuild this architecture (for checkpoints): plain data only."""
        config = self.hf.config.to_dict()
        for key in ("_name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype"):
            config.pop(key, None)
        return {"hf_config": config, "context_length": self.context_length, "vocab_size": self.vocab_size}

    def card_config(self) -> dict:
        return {"architecture": type(self.hf).__name__, "model_type": self.hf.config.model_type,
                "vocab_size": self.vocab_size, "context_length": self.context_length}

    def attention_shape(self) -> tuple[int, int] | None:
        return hf_layers_and_width(self.hf.config)

    def add_lora(self, lora_config) -> nn.Module:
        """Adapt the transformers model inside, which peft knows best; this wrapper stays outermost."""
        from peft import get_peft_model
        from transformers.pytorch_utils import Conv1D

        # GPT-2's layers are Conv1D, whose weight is stored (in, out): peft needs fan_in_fan_out=True for them
        # (it set that itself, with a warning, in every run).
        lora_config.fan_in_fan_out = any(isinstance(m, Conv1D) for m in self.hf.modules())
        with warnings.catch_warnings():
            # peft 0.21.2 reads is_gradient_checkpointing, which transformers 5.23 deprecates with a
            # FutureWarning about peft's code, not the user's: hidden for this call only.
            warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
            self.hf = get_peft_model(self.hf, lora_config)
        return self

    def merge_lora(self) -> nn.Module:
        if is_peft_model(self.hf):
            self.hf = self.hf.merge_and_unload()
        return self

    def transformers_model(self, tokenizer_spec: dict | None, positions: int | None = None) -> nn.Module:
        return self.hf  # whole: its positions may not be a table to cut (rotary); the tokenizer says the window

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        check_window(idx.size(1), self.context_length)
        return self.hf(input_ids=idx, use_cache=False).logits[..., : self.vocab_size]


def pretrained_reading(name_or_path: str, tokenizer, context_length: int | None = None) -> HFCausalLM:
    """Pretrained weights that will read ``tokenizer``'s ids (checked to be the model's own); logits of
    padded embedding rows are cut off at the tokenizer's vocabulary."""
    model = HFCausalLM(model=load_pretrained_hf(name_or_path), context_length=context_length)
    check_tokenizer_agrees(name_or_path, model, tokenizer)
    model.vocab_size = tokenizer.vocab_size
    return model


def check_tokenizer_agrees(name_or_path: str, model: HFCausalLM, data_tokenizer) -> None:
    """The model must read the data's token ids as the tokens it was trained on: same tokenizer."""
    spec = data_tokenizer.spec()
    if spec["kind"] == "char":
        raise ConfigError(
            f"model.pretrained={name_or_path} uses a different tokenizer from the data's (char): a pretrained "
            f"model reads its own token ids; tokenise the data with the model's own (data.tokenizer={name_or_path})"
        )
    if model.embedding_rows < data_tokenizer.vocab_size:
        raise ConfigError(
            f"model.pretrained={name_or_path} has {model.embedding_rows} token ids but the data's {spec['kind']} "
            f"tokenizer has {data_tokenizer.vocab_size}: their tokenizers differ; tokenise the data with the "
            f"model's own (data.tokenizer={name_or_path})"
        )
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir() or not any((folder / f).exists() for f in ("tokenizer.json", "vocab.json")):
        return  # no tokenizer files to compare: the vocabulary size check above is all we can do
    from transformers import AutoTokenizer

    probe = "Every effort moves you, ROMEO: 1234 <tokens> naïve\n"
    theirs = AutoTokenizer.from_pretrained(str(folder)).encode(probe, add_special_tokens=False)
    ours = data_tokenizer.encode(probe)
    if theirs != ours:
        raise ConfigError(
            f"model.pretrained={name_or_path} uses a different tokenizer from the data's ({spec['kind']}): "
            f"the same text gives ids {theirs[:6]}... vs {ours[:6]}...; tokenise the data with the model's own "
            f"(data.tokenizer={name_or_path})"
        )


def hf_layers_and_width(config) -> tuple[int, int] | None:
    """(layers, width) from a transformers config, whatever the family calls them."""
    layers = _first_attr(config, "n_layer", "num_hidden_layers", "num_layers")
    width = _first_attr(config, "n_embd", "hidden_size", "d_model")
    return None if layers is None or width is None else (int(layers), int(width))


def _first_attr(config, *names: str):
    return next((getattr(config, n) for n in names if getattr(config, n, None) is not None), None)
