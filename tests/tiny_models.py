"""Models small enough for a unit test: built in one place, sized by each test through overrides."""

from __future__ import annotations

from gptlab.models.decoder import TransformerDecoderLM
from gptlab.models.gpt import GPT

# A one-layer GPT with GPT-2's vocabulary: the model config of in-process test checkpoints.
TINY_GPT = {
    "_target_": "gptlab.models.GPT",
    "vocab_size": 50257,
    "context_length": 32,
    "emb_dim": 16,
    "n_heads": 2,
    "n_layers": 1,
    "drop_rate": 0.0,
}

def tiny_gpt_config(**overrides) -> dict:
    """TINY_GPT with some settings changed (a smaller vocabulary or window)."""
    return {**TINY_GPT, **overrides}


# Two layers of 32 wide over 50 ids: every code path of a model, in milliseconds.
_SMALL = dict(vocab_size=50, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)


def tiny_gpt(**overrides) -> GPT:
    return GPT(**{**_SMALL, **overrides})


def tiny_decoder(**overrides) -> TransformerDecoderLM:
    return TransformerDecoderLM(**{**_SMALL, **overrides})
