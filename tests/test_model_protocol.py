"""A model is one file: a new LanguageModel subclass trains, counts its FLOPs, takes LoRA, shards under FSDP,
compiles, generates and is refused by the export, through its own answers alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gptlab.core.errors import ConfigError, GptlabError
from gptlab.generation.decoding import generate
from gptlab.hub.export import export_to_hf
from gptlab.models.compile import compile_model
from gptlab.models.flops import matmul_parameter_count, model_flops_per_token
from gptlab.models.language_model import LanguageModel, language_model
from gptlab.training.distributed import transformer_block_types
from gptlab.training.finetune import apply_finetune, merge_finetune
from gptlab.training.module import LanguageModelModule

CHARS = "abcdefgh"


class MixerBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.mix = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.tanh(self.mix(x))


class MixerLM(LanguageModel):
    """Not a transformer at all: what the rest of gptlab knows of it is its LanguageModel answers."""

    block_types = (MixerBlock,)
    lora_targets = ["mix"]

    def __init__(self, vocab_size: int, context_length: int = 8, width: int = 8):
        super().__init__()
        self.vocab_size, self.context_length = vocab_size, context_length
        self.embed = nn.Embedding(vocab_size, width)
        self.blocks = nn.Sequential(MixerBlock(width), MixerBlock(width))
        self.head = nn.Linear(width, vocab_size)
        self.losses = 0
        self.compiled = False

    def config_dict(self) -> dict:
        return {"vocab_size": self.vocab_size, "context_length": self.context_length}

    def attention_shape(self) -> tuple[int, int]:
        return 0, self.embed.embedding_dim  # no attention: FLOPs are 6 per matmul parameter

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.embed(idx)))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.losses += 1
        return super().loss(idx, targets)

    def compile_for_training(self) -> None:
        self.compiled = True  # compiling for real takes a minute; that it is asked is the contract


MIXER = {"_target_": f"{__name__}.MixerLM", "vocab_size": len(CHARS), "context_length": 8}


def test_training_uses_the_models_own_loss():
    module = LanguageModelModule(model=MIXER, tokenizer={"kind": "char", "chars": CHARS})
    batch = torch.randint(0, len(CHARS), (2, 8)), torch.randint(0, len(CHARS), (2, 8))
    loss = module.loss(batch)
    assert module.model.losses == 1 and torch.isfinite(loss)


def test_flops_fsdp_and_compile_follow_the_models_answers():
    module = LanguageModelModule(model=MIXER, tokenizer={"kind": "char", "chars": CHARS})
    assert model_flops_per_token(module, 8) == 6 * matmul_parameter_count(module.model)
    assert MixerBlock in transformer_block_types()
    compile_model(module)
    assert module.model.compiled


def test_lora_goes_where_the_model_says_and_merges_back():
    model = apply_finetune(MixerLM(len(CHARS)), {"name": "lora", "rank": 2, "target_modules": "all-linear"})
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name and ".mix." in name for name in trainable)
    merged = merge_finetune(model)
    assert type(merged) is MixerLM and type(merged.blocks[0].mix) is nn.Linear
    assert language_model(model) is merged


def test_a_model_without_lora_targets_asks_for_them():
    class NoTargets(MixerLM):
        lora_targets = None

    with pytest.raises(ConfigError, match="list the module names to adapt"):
        apply_finetune(NoTargets(len(CHARS)), {"name": "lora", "rank": 2})


def test_generation_reads_the_whole_window_and_the_export_refuses(tmp_path):
    model = MixerLM(len(CHARS)).eval()
    out = generate(model, torch.zeros(1, 3, dtype=torch.long), max_new_tokens=10, context_length=8, temperature=0)
    assert out.shape == (1, 13)
    with pytest.raises(GptlabError, match="only the GPT .* this is MixerLM"):
        export_to_hf(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()
