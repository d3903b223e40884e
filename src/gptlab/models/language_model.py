"""What the rest of gptlab may ask of a model: one small interface, so adding a model touches one file.

Every model maps token ids (B, T) to next-token logits (B, T, vocab_size) and subclasses
:class:`LanguageModel`, which says the rest: its window and vocabulary, its constructor arguments for a
checkpoint, its loss, the layer it repeats (what FSDP shards and ``compile=true`` compiles), where LoRA
goes, its FLOPs shape, and how it leaves as a transformers model. Training, checkpoints, generation, the
hub and the throughput callback call these; none of them switches on a model's type.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from gptlab.core.errors import ConfigError, GptlabError

if TYPE_CHECKING:
    from gptlab.models.gpt import KVCache


class LanguageModel(nn.Module):
    # Set by each model (an attribute or a property).
    context_length: int  # positions it can attend to
    vocab_size: int  # the tokenizer's ids: logits have this many columns (an embedding may have more rows)

    # The layer repeated through the model: FSDP shards one per unit (conf/trainer/fsdp.yaml).
    block_types: ClassVar[tuple[type[nn.Module], ...]] = ()
    # peft's target_modules for finetune.target_modules=all-linear; None: the user must name them.
    lora_targets: ClassVar[list[str] | str | None] = None
    # Whether forward takes kv_cache= and last_only= (see gptlab.generation.decoding).
    supports_kv_cache: ClassVar[bool] = False
    # Whether it has packed_logits_at: several sequences in one row (scoring a context's continuations).
    supports_packing: ClassVar[bool] = False

    def config_dict(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this architecture (what a checkpoint stores): plain data."""
        raise NotImplementedError

    def card_config(self) -> dict[str, Any]:
        """The architecture as a model card shows it."""
        return self.config_dict()

    def attention_shape(self) -> tuple[int, int] | None:
        """(attention blocks, width): with the matmul parameters, all that training FLOPs depend on; None
        where the model does not say (MFU is then not reported)."""
        raise NotImplementedError

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of ids (B, T) against targets (B, T) (-100 = ignored)."""
        logits = self(idx)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def logits_at(self, idx: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits (N, vocab_size) at N chosen (row, position) pairs of ids (B, T): scoring a continuation
        needs the head at its positions only. A model whose head can run on fewer positions overrides it."""
        return self(idx)[rows, positions]

    def packed_logits_at(
        self, idx: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor
    ) -> torch.Tensor:
        """Logits (N, vocab_size) at N chosen (row, column) pairs of ids (B, T) whose rows pack several
        sequences: each token has its own position (B, T) and looks only at the keys ``allowed`` (B, T, T)
        marks (True: may look). Only where ``supports_packing``."""
        raise GptlabError(f"{type(self).__name__} does not score packed rows")

    def new_kv_cache(self, left_padding: torch.Tensor | None = None) -> KVCache:
        raise GptlabError(f"{type(self).__name__} has no KV cache")

    def compile_for_training(self) -> None:
        """``compile=true``: compile in place, keeping every parameter name."""
        self.compile()

    def add_lora(self, lora_config) -> nn.Module:
        """The model with peft's LoRA adapters added (``lora_config``: a peft LoraConfig)."""
        from peft import get_peft_model

        try:
            return get_peft_model(self, lora_config)
        except ValueError as err:
            raise ConfigError(f"finetune=lora: {err}") from None

    def merge_lora(self) -> nn.Module:
        """Adapters the model holds inside itself folded into its weights (peft's own wrapper is unwrapped
        by the caller)."""
        return self

    def transformers_model(self, tokenizer_spec: dict | None, positions: int | None = None) -> nn.Module:
        """A transformers model holding these weights (what export.py saves); ``positions``: the positions
        trained, where the model can keep only those (a position table); None: all."""
        raise GptlabError(
            "only the GPT (model=gpt124m, gpt_small, ...) and model=hf_causal_lm export to Hugging Face; "
            f"this is {type(self).__name__}"
        )


def is_peft_model(module: nn.Module) -> bool:
    """Whether peft's LoRA wrapper holds ``module``'s adapters. Only a process that imported peft can have
    made one: the others (generating from a plain checkpoint) skip peft's import, seconds of their start."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(module, peft.PeftModel)


def find_language_model(module: nn.Module) -> LanguageModel | None:
    """The gptlab model inside ``module``: past a LightningModule, peft's LoRA wrapper and compile."""
    return next((m for m in module.modules() if isinstance(m, LanguageModel)), None)


def language_model(module: nn.Module) -> LanguageModel:
    found = find_language_model(module)
    if found is None:
        raise GptlabError(f"{type(module).__name__} holds no gptlab model")
    return found


def block_types_of_every_model() -> set[type[nn.Module]]:
    """The repeated layers of all gptlab models (FSDP's wrap policy is set before the model is built)."""
    import gptlab.models  # noqa: F401  (every model class is defined, so subclassed, by now)
    import gptlab.models.hf_causal_lm  # noqa: F401

    found: set[type[nn.Module]] = set()
    pending = list(LanguageModel.__subclasses__())
    while pending:
        model_class = pending.pop()
        found.update(model_class.block_types)
        pending.extend(model_class.__subclasses__())
    return found
