"""A language model built on torch.nn.TransformerDecoder.

nn.TransformerDecoder is an encoder-decoder building block: each layer attends to its own input
(self-attention) and to a second "memory" sequence (cross-attention). A decoder-only language model has
no encoder, so the embedded input is fed as the memory too, and both attentions get the same causal mask:
otherwise cross-attention would let position t read token t+1 and the model would learn to copy.

Scales at initialisation: token embeddings are drawn N(0, 1/d) and multiplied by sqrt(d) (as in "Attention
Is All You Need"), so tokens and the sinusoidal positions enter at the same size (RMS 1 and 0.71); the
PyTorch default, N(0, 1) times sqrt(d), made tokens 16x larger than positions at d=128 (RMS 11.3). The
memory goes through its own LayerNorm, as the layers' pre-norm does for their input: un-normalised, its
large embeddings made cross-attention nearly one-hot before any training.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn

from gptlab.config.model import check_decoder
from gptlab.models.checks import check_window
from gptlab.models.language_model import LanguageModel


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """The fixed sin/cos position table of "Attention Is All You Need", shape (length, dim)."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


class TransformerDecoderLM(LanguageModel):
    block_types = (nn.TransformerDecoderLayer,)

    def __init__(
        self,
        vocab_size: int,
        context_length: int = 256,
        emb_dim: int = 128,
        n_heads: int = 4,
        n_layers: int = 2,
        drop_rate: float = 0.1,
        ff_dim: int | None = None,
    ):
        super().__init__()
        ff_dim = ff_dim or 4 * emb_dim
        self._config = {"vocab_size": vocab_size, "context_length": context_length, "emb_dim": emb_dim,
                        "n_heads": n_heads, "n_layers": n_layers, "drop_rate": drop_rate, "ff_dim": ff_dim}
        check_decoder(SimpleNamespace(**self._config))
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.emb_scale = math.sqrt(emb_dim)
        self.embed = nn.Embedding(vocab_size, emb_dim)
        nn.init.normal_(self.embed.weight, std=emb_dim**-0.5)
        self.register_buffer("positions", sinusoidal_positions(context_length, emb_dim), persistent=False)
        self.drop = nn.Dropout(drop_rate)
        layer = nn.TransformerDecoderLayer(
            d_model=emb_dim,
            nhead=n_heads,
            dim_feedforward=ff_dim,
            dropout=drop_rate,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.decoder = nn.TransformerDecoder(layer, num_layers=n_layers, norm=nn.LayerNorm(emb_dim))
        self.memory_norm = nn.LayerNorm(emb_dim)
        self.head = nn.Linear(emb_dim, vocab_size)

    def config_dict(self) -> dict:
        return dict(self._config)

    def attention_shape(self) -> tuple[int, int]:
        # Each layer attends to itself and to the memory, which is the input again (same length T).
        return 2 * len(self.decoder.layers), self.embed.embedding_dim

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        seq_len = idx.size(1)
        check_window(seq_len, self.context_length)
        x = self.drop(self.embed(idx) * self.emb_scale + self.positions[:seq_len])
        mask = nn.Transformer.generate_square_subsequent_mask(seq_len, device=idx.device, dtype=x.dtype)
        hidden = self.decoder(
            tgt=x,
            memory=self.memory_norm(x),
            tgt_mask=mask,
            memory_mask=mask,
            tgt_is_causal=True,
            memory_is_causal=True,
        )
        return self.head(hidden)
