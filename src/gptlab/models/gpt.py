"""The GPT written from scratch: the GPT-2 architecture (pre-LayerNorm transformer decoder).

token + learned position embeddings -> dropout -> N blocks -> final LayerNorm -> linear head.
Each block: x + Attention(LN(x)), then x + FeedForward(LN(x)), with causal multi-head self-attention
and a 4x-wide GELU feed-forward (GELU's tanh approximation, as in OpenAI's GPT-2, or the exact one).
"""

from __future__ import annotations

import math
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import nn

from gptlab.config.model import GPTConfig
from gptlab.core.errors import ConfigError
from gptlab.models.checks import check_window
from gptlab.models.fused_loss import linear_cross_entropy
from gptlab.models.language_model import LanguageModel


class KVCache:
    """Keys and values of every layer for the tokens already seen, so decoding feeds one new token a step.

    Room for the whole context window is allocated at the first write, in the dtype the keys come in (so
    it also works under autocast): (n_layers, batch, heads, context_length, head_dim) for keys and values.
    ``length`` counts the cached positions; the next token fed gets position ``length``.
    """

    def __init__(self, n_layers: int, capacity: int, left_padding: torch.Tensor | None = None):
        self.n_layers = n_layers
        self.capacity = capacity
        self.length = 0
        self.keys: torch.Tensor | None = None
        self.values: torch.Tensor | None = None
        # Prompts of different lengths in one batch (a server batching requests): row b starts with
        # left_padding[b] padding tokens, which no query attends to and which positions do not count.
        self.left_padding = left_padding

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new keys/values (B, heads, T, head_dim) of one layer; return all of that layer's."""
        if self.keys is None:
            batch, heads, _, head_dim = k.shape
            shape = (self.n_layers, batch, heads, self.capacity, head_dim)
            self.keys = k.new_zeros(shape)
            self.values = v.new_zeros(shape)
        end = self.length + k.size(2)
        self.keys[layer_idx, :, :, self.length : end] = k
        self.values[layer_idx, :, :, self.length : end] = v
        return self.keys[layer_idx, :, :, :end], self.values[layer_idx, :, :, :end]

    def reorder(self, batch_index: torch.Tensor) -> None:
        """Keep the rows ``batch_index`` (beam search: each surviving beam takes its parent's cache)."""
        if self.keys is not None:
            self.keys = self.keys.index_select(1, batch_index)
            self.values = self.values.index_select(1, batch_index)
        if self.left_padding is not None:
            self.left_padding = self.left_padding.index_select(0, batch_index)

    def append_rows(self, other: KVCache) -> None:
        """Take ``other``'s rows (same length, left-padded) into this batch: a request joins a running batch."""
        if other.length != self.length:
            raise ValueError(f"a cache of {other.length} positions cannot join one of {self.length}")
        self.left_padding = torch.cat([self.padding(), other.padding()])
        self.keys = torch.cat([self.keys, other.keys], dim=1)
        self.values = torch.cat([self.values, other.values], dim=1)

    def padding(self) -> torch.Tensor:
        """Padding tokens before each row (zeros where none was given)."""
        if self.left_padding is not None:
            return self.left_padding
        return torch.zeros(self.keys.size(1), dtype=torch.long, device=self.keys.device)

    def positions(self, seq_len: int, device: torch.device) -> torch.Tensor:
        """Positions of the next ``seq_len`` tokens: (T,), or (B, T) counted from each row's first real token."""
        positions = torch.arange(self.length, self.length + seq_len, device=device)
        if self.left_padding is None:
            return positions
        return (positions.unsqueeze(0) - self.left_padding.unsqueeze(1)).clamp(min=0)

    def attention_mask(self, future_mask: torch.Tensor, seq_len: int) -> torch.Tensor | None:
        """Where the next ``seq_len`` queries may look (True: allowed), (B, 1, T, S) with left padding, else
        None (plain causal attention)."""
        if self.left_padding is None:
            return None
        end = self.length + seq_len
        causal = ~future_mask[self.length : end, :end]  # (T, S)
        keys = torch.arange(end, device=causal.device)
        real = keys.unsqueeze(0) >= self.left_padding.unsqueeze(1)  # (B, S)
        # A padding token attends to itself only: a query with no key at all would give NaN, which the
        # next layer's keys would carry into every row's attention.
        itself = keys.unsqueeze(0) == torch.arange(self.length, end, device=causal.device).unsqueeze(1)  # (T, S)
        return (causal.unsqueeze(0) & (real.unsqueeze(1) | itself.unsqueeze(0))).unsqueeze(1)


# torch 2.13's CPU flash-attention backward in bfloat16 is slower than in float32 for short rows: 2-3x at 64
# tokens of 32 dimensions a head, even at 128 x 64, while from about 256 x 64 on bfloat16 is as fast or
# faster (a 2-core Xeon with AMX; BENCHMARKS.md). Training in bf16-mixed on a CPU computes the attention of
# rows smaller than this in float32 (a little more exact, too); its forward alone stays in bfloat16.
CPU_BF16_ATTENTION_MIN_ELEMENTS = 256 * 64


def float32_attention_is_faster(q: torch.Tensor) -> bool:
    """Whether attention on ``q`` (B, heads, T, head_dim) trains faster in float32 than as it comes."""
    return (
        q.device.type == "cpu"
        and q.dtype == torch.bfloat16
        and torch.is_grad_enabled()
        and q.size(2) * q.size(3) < CPU_BF16_ATTENTION_MIN_ELEMENTS
    )


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.head_dim = cfg.emb_dim // cfg.n_heads
        self.attn_impl = cfg.attn_impl
        self.drop_rate = cfg.drop_rate
        # q, k and v in one matmul; split afterwards.
        self.qkv = nn.Linear(cfg.emb_dim, 3 * cfg.emb_dim, bias=cfg.qkv_bias)
        self.out_proj = nn.Linear(cfg.emb_dim, cfg.emb_dim, bias=cfg.bias)
        self.attn_dropout = nn.Dropout(cfg.drop_rate)
        mask = torch.triu(torch.ones(cfg.context_length, cfg.context_length, dtype=torch.bool), diagonal=1)
        self.register_buffer("future_mask", mask, persistent=False)

    def forward(
        self, x: torch.Tensor, kv_cache: KVCache | None = None, layer_idx: int = 0, allowed: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``allowed`` (B, 1, T, T), without a cache: where each query may look (packed rows); else causal."""
        batch, seq_len, emb_dim = x.shape
        q, k, v = self.qkv(x).split(emb_dim, dim=2)
        # (B, T, C) -> (B, heads, T, head_dim)
        q, k, v = (t.view(batch, seq_len, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        past = 0
        if kv_cache is not None:
            past = kv_cache.length
            allowed = kv_cache.attention_mask(self.future_mask, seq_len)
            k, v = kv_cache.update(layer_idx, k, v)
        if allowed is not None:  # left-padded rows (causal and padding mask together), or packed rows
            out = self._masked_attention(q, k, v, allowed)
        elif self.attn_impl == "sdpa":
            out = self._sdpa_attention(q, k, v, past)
        else:
            out = self._manual_attention(q, k, v, past)
        out = out.transpose(1, 2).reshape(batch, seq_len, emb_dim)
        return self.out_proj(out)

    def _sdpa_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int) -> torch.Tensor:
        dropout_p = self.drop_rate if self.training else 0.0
        seq_len = q.size(2)
        if past == 0:
            if float32_attention_is_faster(q):
                with torch.autocast("cpu", enabled=False):
                    out = F.scaled_dot_product_attention(
                        q.float(), k.float(), v.float(), dropout_p=dropout_p, is_causal=True
                    )
                return out.to(q.dtype)
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        if seq_len == 1:
            # One new token may look at everything cached: no mask needed.
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        # Several new tokens after a cached prefix: sdpa's is_causal aligns the mask top-left, which is wrong
        # when queries start at position `past`, so pass the rows of the full causal mask explicitly.
        allowed = ~self.future_mask[past : past + seq_len, : past + seq_len]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p)

    def _masked_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        if self.attn_impl == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        scores = (q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)).masked_fill(~allowed, float("-inf"))
        return torch.softmax(scores, dim=-1) @ v

    def _manual_attention(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int = 0
    ) -> torch.Tensor:
        seq_len = q.size(2)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(self.future_mask[past : past + seq_len, : past + seq_len], float("-inf"))
        weights = self.attn_dropout(torch.softmax(scores, dim=-1))
        return weights @ v


class FeedForward(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.emb_dim, 4 * cfg.emb_dim, bias=cfg.bias)
        # GPT-2 was trained with the tanh approximation of GELU (exact GELU would not match its weights);
        # a model trained from scratch may take the exact one, which is cheaper on CPU.
        self.gelu = nn.GELU(approximate="tanh" if cfg.gelu == "tanh" else "none")
        self.proj = nn.Linear(4 * cfg.emb_dim, cfg.emb_dim, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.gelu(self.fc(x)))


class TransformerBlock(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.emb_dim, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.emb_dim, bias=cfg.bias)
        self.ff = FeedForward(cfg)
        self.drop_resid = nn.Dropout(cfg.drop_rate)

    def forward(
        self, x: torch.Tensor, kv_cache: KVCache | None = None, layer_idx: int = 0, allowed: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = x + self.drop_resid(self.attn(self.norm1(x), kv_cache, layer_idx, allowed))
        return x + self.drop_resid(self.ff(self.norm2(x)))


class GPT(LanguageModel):
    """GPT-2-style language model. Keyword arguments are the fields of :class:`GPTConfig`."""

    block_types = (TransformerBlock,)
    # Every linear layer of the blocks; the output head stays frozen, as peft's "all-linear" does.
    lora_targets = ["qkv", "out_proj", "fc", "proj"]
    supports_kv_cache = True
    supports_packing = True

    def __init__(self, cfg: GPTConfig | None = None, **kwargs):
        super().__init__()
        if cfg is None:
            try:
                cfg = GPTConfig(**kwargs)
            except TypeError as err:
                known = ", ".join(GPTConfig.__dataclass_fields__)
                raise ConfigError(f"unknown GPT setting ({err}); known settings: {known}") from None
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.padded_vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.blocks = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.emb_dim, bias=cfg.bias)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.padded_vocab_size, bias=False)
        if cfg.tie_weights:
            self.out_head.weight = self.tok_emb.weight
        # Set by compile_blocks(): a torch.compile'd TransformerBlock.forward for the cache-free path.
        self.compiled_block = None
        # The fused loss reads out_head.weight; a LoRA adapter on the head (add_lora) adds to it.
        self.head_adapted = False
        if cfg.init == "gpt2":
            self._gpt2_init()

    def _gpt2_init(self) -> None:
        self.apply(self._init_weights)
        # GPT-2's scaled init: each residual branch adds to the stream, so shrink its last projection
        # by sqrt(2 * n_layers) to keep the residual variance from growing with depth.
        for name, param in self.named_parameters():
            if name.endswith(("attn.out_proj.weight", "ff.proj.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * self.cfg.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @property
    def context_length(self) -> int:
        return self.cfg.context_length

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    def attention_shape(self) -> tuple[int, int]:
        return self.cfg.n_layers, self.cfg.emb_dim

    def compile_for_training(self) -> None:
        """Regional compilation: every block runs the same graph, so compiling costs one block's time, not
        twelve; the KV-cached decoding path and the fused loss stay eager."""
        self.compile_blocks()

    def compile_blocks(self) -> None:
        """torch.compile the blocks' forward for training and validation (see gptlab.models.compile)."""
        self.compiled_block = torch.compile(TransformerBlock.forward)

    def config_dict(self) -> dict:
        return asdict(self.cfg)

    def add_lora(self, lora_config) -> nn.Module:
        adapted = super().add_lora(lora_config)
        self.head_adapted = type(self.out_head) is not nn.Linear  # out_head was among the targets
        return adapted

    def merge_lora(self) -> nn.Module:
        self.head_adapted = False  # called once peft's wrapper has folded the adapters in
        return self

    def transformers_model(self, tokenizer_spec: dict | None, positions: int | None = None) -> nn.Module:
        from gptlab.hub.export import gpt2_lm_head_model  # transformers is slow to import: only here

        return gpt2_lm_head_model(self, tokenizer_spec, positions)

    def new_kv_cache(self, left_padding: torch.Tensor | None = None) -> KVCache:
        """An empty cache for one batch of sequences (batch size and dtype are set by the first forward);
        ``left_padding`` (B,): padding tokens before each row's prompt."""
        return KVCache(self.cfg.n_layers, self.cfg.context_length, left_padding)

    def forward(
        self, idx: torch.Tensor, kv_cache: KVCache | None = None, last_only: bool = False
    ) -> torch.Tensor:
        """Logits (B, T, vocab_size) for ids (B, T); padded vocabulary rows are cut off.

        With ``kv_cache``, ``idx`` holds only the tokens after those already cached; their keys and values
        are appended to the cache. ``last_only`` computes the head for the last position only (B, 1, vocab),
        which is all decoding needs and saves a (T x vocab) matmul.
        """
        x = self.hidden_states(idx, kv_cache)
        if last_only:
            x = x[:, -1:, :]
        return self.out_head(x)[..., : self.cfg.vocab_size]

    def logits_at(self, idx: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # The head (emb_dim x vocab, a third of GPT-2 124M's matmul FLOPs) only where logits are read.
        return self.out_head(self.hidden_states(idx)[rows, positions])[..., : self.cfg.vocab_size]

    def packed_logits_at(
        self, idx: torch.Tensor, positions: torch.Tensor, allowed: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor
    ) -> torch.Tensor:
        # A row may be longer than the context; its positions may not.
        check_window(int(positions.max()) + 1, self.cfg.context_length)
        x = self.drop_emb(self.tok_emb(idx) + self.pos_emb(positions))
        heads_share = allowed.unsqueeze(1)  # (B, 1, T, T): one mask for every head
        for block in self.blocks:
            x = block(x, allowed=heads_share)
        return self.out_head(self.final_norm(x)[rows, columns])[..., : self.cfg.vocab_size]

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of ids (B, T) against targets (B, T) (-100 = ignored)."""
        x = self.hidden_states(idx)
        if self.cfg.fused_loss and not self.head_adapted:  # an adapted head is more than its weight
            return linear_cross_entropy(x.flatten(0, 1), self.out_head.weight, targets.flatten(), self.cfg.vocab_size)
        logits = self.out_head(x)[..., : self.cfg.vocab_size]
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def hidden_states(self, idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """The final LayerNorm's output (B, T, emb_dim): everything but the output head."""
        seq_len = idx.size(1)
        past = 0
        if kv_cache is not None:
            past = kv_cache.length
            if past + seq_len > kv_cache.capacity:
                raise ConfigError(
                    f"KV cache holds {past} tokens; {seq_len} more exceed model.context_length="
                    f"{self.cfg.context_length}: start a new cache on the last {self.cfg.context_length} tokens"
                )
        else:
            check_window(seq_len, self.cfg.context_length)
        positions = torch.arange(past, past + seq_len, device=idx.device) if kv_cache is None else kv_cache.positions(seq_len, idx.device)
        x = self.drop_emb(self.tok_emb(idx) + self.pos_emb(positions))
        for layer_idx, block in enumerate(self.blocks):
            if kv_cache is None and self.compiled_block is not None:
                x = self.compiled_block(block, x)
            else:
                x = block(x, kv_cache, layer_idx)
        if kv_cache is not None:
            kv_cache.length = past + seq_len
        return self.final_norm(x)
