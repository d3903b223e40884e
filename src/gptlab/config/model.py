"""The model group (conf/model/): the GPT, the nn.TransformerDecoder model, or any transformers model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gptlab.config.ranges import drop_rate, heads_divide, one_of, positive_ints

ATTENTION_IMPLS = ("sdpa", "manual")
# tanh: GELU's tanh approximation, which GPT-2 was trained with (its weights need it). exact: the erf GELU
# (nanoGPT's nn.GELU()), 3-4x cheaper than tanh on CPUs whose tanh is slow (AVX2: 0.19 against 0.72 ms
# for a 768x512 activation), which matters in a small model.
GELUS = ("tanh", "exact")
# gpt2: N(0, 0.02) weights, residual projections scaled by 1/sqrt(2 n_layers) (GPT-2, nanoGPT).
# pytorch: the layers' own defaults, as the book's chapter-5 model keeps them.
INITS = ("gpt2", "pytorch")


def check_transformer(cfg: Any, **sizes: int | None) -> None:
    """What every transformer needs: positive sizes (``sizes`` adds the model's own), heads that divide
    the width, dropout below 1."""
    positive_ints(
        "model.", vocab_size=cfg.vocab_size, context_length=cfg.context_length, emb_dim=cfg.emb_dim,
        n_heads=cfg.n_heads, n_layers=cfg.n_layers, **sizes,
    )
    heads_divide(cfg.emb_dim, cfg.n_heads)
    drop_rate(cfg.drop_rate)


def check_gpt(cfg: Any) -> None:
    """The GPT's rules, for its schema and for GPTConfig built from Python alike."""
    check_transformer(cfg, vocab_pad_multiple=cfg.vocab_pad_multiple)
    one_of("model.attn_impl", cfg.attn_impl, ATTENTION_IMPLS)
    one_of("model.init", cfg.init, INITS)
    one_of("model.gelu", cfg.gelu, GELUS)


def check_decoder(cfg: Any) -> None:
    """TransformerDecoderLM's rules, for its schema and for the model built from Python alike."""
    check_transformer(cfg, ff_dim=cfg.ff_dim)


@dataclass
class GPTConfig:
    """The GPT's settings (gptlab.models.gpt.GPT takes them as keyword arguments). Kept here, free of
    torch, so that the schema of conf/model/ extends it instead of listing the fields again."""

    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = False
    # Biases in the other linear layers and the LayerNorms (GPT-2 has them; bias=False is a little faster
    # and, in nanoGPT's experience, no worse).
    bias: bool = True
    # Pad the embedding and output head to a multiple of this many rows (64: 50257 -> 50304), a shape
    # matrix kernels handle better. Logits are cut back to vocab_size, so padded ids are never predicted.
    vocab_pad_multiple: int = 1
    # "sdpa" uses torch's fused scaled_dot_product_attention; "manual" is the readable reference
    # implementation (explicit scores, mask and softmax) that the fast path is tested against.
    attn_impl: str = "sdpa"
    # Share the token embedding matrix with the output head, as GPT-2 does (saves vocab_size * emb_dim
    # parameters; needed to load OpenAI's GPT-2 weights, which were trained tied).
    tie_weights: bool = False
    # Training loss through the chunked head + cross-entropy (gptlab.models.fused_loss), which keeps only
    # the logits' gradient (no logits or fp32 copies); False computes logits and F.cross_entropy, the
    # reference it is tested against.
    fused_loss: bool = True
    # How the weights start: "gpt2" or "pytorch" (see gptlab.config.model.INITS).
    init: str = "gpt2"
    # The feed-forward's activation: "tanh" (GPT-2's) or "exact" (see gptlab.config.model.GELUS).
    gelu: str = "tanh"

    def __post_init__(self) -> None:
        check_gpt(self)

    @property
    def padded_vocab_size(self) -> int:
        return math.ceil(self.vocab_size / self.vocab_pad_multiple) * self.vocab_pad_multiple


@dataclass
class GPTModelConfig(GPTConfig):
    """conf/model/gpt124m.yaml and its smaller and larger shapes: GPTConfig, whose vocabulary the
    tokenizer decides when unset."""

    vocab_size: int | None = None
    _target_: str = "gptlab.models.GPT"


@dataclass
class DecoderModelConfig:
    """conf/model/decoder.yaml: gptlab.models.TransformerDecoderLM."""

    _target_: str = "gptlab.models.TransformerDecoderLM"
    vocab_size: int | None = None
    context_length: int = 256
    emb_dim: int = 128
    n_heads: int = 4
    n_layers: int = 2
    drop_rate: float = 0.1
    ff_dim: int | None = None  # null: 4 x emb_dim

    def __post_init__(self) -> None:
        check_decoder(self)


@dataclass
class HFCausalLMConfig:
    """conf/model/hf_causal_lm.yaml: any transformers AutoModelForCausalLM."""

    _target_: str = "gptlab.models.hf_causal_lm.HFCausalLM"
    pretrained: str | None = None  # a local folder, or a Hub name where there is a network
    # An AutoConfig (with model_type) to build from scratch. Typed Any: OmegaConf 2.3 cannot merge a
    # command-line dict into an Optional[dict] field that is null.
    hf_config: Any = None
    context_length: int | None = None  # null: the model config's

    def __post_init__(self) -> None:
        positive_ints("model.", context_length=self.context_length)
