"""Language models trained by gptlab. Both map token ids (B, T) to next-token logits (B, T, vocab)."""

from gptlab.models.decoder import TransformerDecoderLM
from gptlab.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig", "TransformerDecoderLM"]
