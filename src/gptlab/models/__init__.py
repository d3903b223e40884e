"""Language models trained by gptlab. Each maps token ids (B, T) to next-token logits (B, T, vocab) and
answers the questions of :class:`gptlab.models.language_model.LanguageModel`."""

from gptlab.models.decoder import TransformerDecoderLM
from gptlab.models.gpt import GPT, GPTConfig
from gptlab.models.language_model import LanguageModel

__all__ = ["GPT", "GPTConfig", "LanguageModel", "TransformerDecoderLM"]
