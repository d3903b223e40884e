"""Autoregressive decoding for any gptlab model (ids (B, T) -> logits (B, T, V)).

Sampling (temperature, top-k, top-p), greedy decoding and beam search. A model that offers a KV cache
(``supports_kv_cache``: our GPT) is fed one new token per step; any other model (TransformerDecoderLM) re-reads
its whole window each step. Both give the same tokens.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gptlab.core.errors import ConfigError

# Scores of impossible beams: large and negative, but finite so that sums stay ordered (as in transformers).
_IMPOSSIBLE = -1.0e9
_shown_notices: set[str] = set()


def notice_once(message: str) -> None:
    """Print a one-line note on stderr the first time it comes up in this process."""
    if message not in _shown_notices:
        _shown_notices.add(message)
        print(f"note: {message}", file=sys.stderr)


def start_ids(tokenizer) -> list[int]:
    """Where a continuation starts when no prompt is given: the end-of-text token (a new document), else,
    for a character vocabulary, a newline (nanoGPT's sample.py starts there) or, lacking one, its first
    character."""
    if tokenizer.eos_id is not None:
        return [tokenizer.eos_id]
    chars = getattr(tokenizer, "chars", "")
    return tokenizer.encode("\n" if "\n" in chars or not chars else chars[0])


def check_sampling_args(
    temperature: float | None,
    top_k: int | None,
    top_p: float | None = None,
    num_beams: int = 1,
) -> None:
    if temperature is not None and temperature < 0:
        raise ConfigError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"top_k must be an integer >= 1 (or null to disable), got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1] (or null to disable), got {top_p}")
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise ConfigError(f"num_beams must be an integer >= 1, got {num_beams}")
    if num_beams > 1:
        sampling = {"top_k": top_k, "top_p": top_p}
        if temperature:
            sampling["temperature"] = temperature
        used = [f"{name}={value}" for name, value in sampling.items() if value is not None]
        if used:
            raise ConfigError(
                f"beam search (num_beams={num_beams}) is deterministic, so {', '.join(used)} does not apply; "
                "drop it, or use num_beams=1 to sample"
            )


def filter_logits(
    logits: torch.Tensor, temperature: float, top_k: int | None = None, top_p: float | None = None
) -> torch.Tensor:
    """Scale by temperature, then keep the top-k and the top-p nucleus (others get -inf), in that order."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens more likely than it already hold top_p of the mass; the most
        # likely token always stays.
        mass_before = probs.cumsum(dim=-1) - probs
        drop = mass_before >= top_p
        drop[:, 0] = False
        logits = logits.scatter(1, order, sorted_logits.masked_fill(drop, float("-inf")))
    return logits


def draw_next(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None
) -> torch.Tensor:
    """Each row's next id (B, 1) from its next-token logits (B, V): the likeliest at temperature 0, else drawn."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


class NextTokenLogits:
    """Next-token logits (B, V) for a batch of growing sequences.

    While the sequences fit the context window, a model with a KV cache gets only the tokens it has not
    seen. Past the window, the window slides: every position shifts, so cached keys (computed at their old
    positions) no longer apply and each step re-reads the last ``context_length`` tokens, exactly as the
    uncached path does.
    """

    def __init__(
        self, model: nn.Module, context_length: int, use_cache: bool = True, vocab_size: int | None = None
    ):
        # A torch.compile'd model would recompile for every cache length: decode with the original module.
        self.model = getattr(model, "_orig_mod", model)
        self.context_length = context_length
        self.use_cache = use_cache and getattr(self.model, "supports_kv_cache", False)
        self.cache = None
        self.vocab_size = vocab_size

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        logits = self._logits(idx)
        # Ids past the tokenizer's vocabulary (a padded head) are never produced: no text holds them.
        return logits if self.vocab_size is None else logits[:, : self.vocab_size]

    def _logits(self, idx: torch.Tensor) -> torch.Tensor:
        seq_len = idx.size(1)
        if self.use_cache and seq_len <= self.context_length:
            if self.cache is None:
                self.cache = self.model.new_kv_cache()
            logits = self.model(idx[:, self.cache.length :], kv_cache=self.cache, last_only=True)
            return logits[:, -1, :].float()
        if seq_len > self.context_length:
            self.cache = None
            notice_once(
                f"the text is longer than the {self.context_length}-token window: the window slides, so "
                f"each new token sees only the last {self.context_length} tokens"
            )
        window = idx[:, -self.context_length :]
        if self.use_cache:
            return self.model(window, last_only=True)[:, -1, :].float()
        return self.model(window)[:, -1, :].float()

    def reorder(self, batch_index: torch.Tensor) -> None:
        if self.cache is not None:
            self.cache.reorder(batch_index)


@torch.no_grad()
def generate(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    context_length: int,
    temperature: float | None = None,
    top_k: int | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    *,
    top_p: float | None = None,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    use_cache: bool = True,
    on_tokens: Callable[[torch.Tensor], None] | None = None,
    vocab_size: int | None = None,
) -> torch.Tensor:
    """Append up to ``max_new_tokens`` tokens to ``idx`` (B, T) and return the ids (B, T + new).

    ``temperature`` 0 decodes greedily (None means 1.0); ``top_k``/``top_p`` restrict sampling. A sequence
    that emits ``eos_id`` is finished: later positions of that row hold ``eos_id`` while the others go on,
    and decoding stops once every row is finished. ``num_beams`` > 1 runs beam search (as transformers'
    ``generate(num_beams=..., do_sample=False)``) and returns the best beam of each row. ``on_tokens`` is
    called with each step's new ids (B, 1), for streaming. Prompts may grow past ``context_length``.
    ``vocab_size`` (the tokenizer's) keeps ids of a larger, padded head from ever being produced.
    """
    check_sampling_args(temperature, top_k, top_p, num_beams)
    if max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if idx.dim() != 2 or idx.size(1) == 0:
        raise ConfigError(
            f"the prompt is empty: need token ids of shape (batch, length >= 1), got {tuple(idx.shape)}"
        )
    was_training = model.training
    model.eval()
    next_logits = NextTokenLogits(model, context_length, use_cache, vocab_size)
    try:
        if num_beams > 1:
            return _beam_search(next_logits, idx, max_new_tokens, num_beams, eos_id, length_penalty)
        return _sample(
            next_logits,
            idx,
            max_new_tokens,
            1.0 if temperature is None else temperature,
            top_k,
            top_p,
            eos_id,
            generator,
            on_tokens,
        )
    finally:
        model.train(was_training)


def _sample(
    next_logits: NextTokenLogits,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    eos_id: int | None,
    generator: torch.Generator | None,
    on_tokens: Callable[[torch.Tensor], None] | None,
) -> torch.Tensor:
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        next_id = draw_next(next_logits(idx), temperature, top_k, top_p, generator)
        if eos_id is not None:
            next_id = next_id.masked_fill(finished.unsqueeze(1), eos_id)
            finished |= next_id.squeeze(1) == eos_id
        idx = torch.cat([idx, next_id], dim=1)
        if on_tokens is not None:
            on_tokens(next_id)
        if eos_id is not None and bool(finished.all()):
            break
    return idx


def _beam_search(
    next_logits: NextTokenLogits,
    idx: torch.Tensor,
    max_new_tokens: int,
    num_beams: int,
    eos_id: int | None,
    length_penalty: float,
) -> torch.Tensor:
    """Beam search with transformers' rules (length_penalty, early_stopping=False), so outputs match it.

    Each step scores every continuation of every live beam by its summed log-probability and keeps the
    best 2 * num_beams candidates. Candidates among the best num_beams that end in EOS (or reach the
    length limit) become finished hypotheses, scored by log-probability / generated_length**length_penalty;
    the best num_beams unfinished candidates live on. Decoding stops when no live beam can beat the worst
    of num_beams finished hypotheses (judged at the current length), or at the length limit.
    """
    if max_new_tokens == 0:
        return idx
    batch, prompt_len = idx.shape
    device = idx.device
    max_len = prompt_len + max_new_tokens
    n_candidates = 2 * num_beams
    fill = eos_id if eos_id is not None else 0

    running = torch.full((batch, num_beams, max_len), fill, dtype=torch.long, device=device)
    running[:, :, :prompt_len] = idx.unsqueeze(1)
    # Only the first beam is live at the start, so the identical copies do not all pick the same tokens.
    running_scores = torch.zeros(batch, num_beams, device=device)
    running_scores[:, 1:] = _IMPOSSIBLE
    done = running.clone()
    done_scores = torch.full((batch, num_beams), _IMPOSSIBLE, device=device)
    done_lengths = torch.full((batch, num_beams), max_len, dtype=torch.long, device=device)
    done_filled = torch.zeros(batch, num_beams, dtype=torch.bool, device=device)
    can_improve = torch.ones(batch, 1, dtype=torch.bool, device=device)
    in_top_beams = torch.arange(n_candidates, device=device) < num_beams
    row_offset = torch.arange(batch, device=device).unsqueeze(1) * num_beams

    cur_len = prompt_len
    while True:
        log_probs = F.log_softmax(next_logits(running[:, :, :cur_len].flatten(0, 1)), dim=-1)
        vocab = log_probs.size(-1)
        log_probs = log_probs.view(batch, num_beams, vocab) + running_scores.unsqueeze(-1)
        cand_scores, flat_index = torch.topk(log_probs.view(batch, num_beams * vocab), n_candidates)
        parent = flat_index // vocab
        cand = torch.take_along_dim(running, parent.unsqueeze(-1), dim=1)
        cand[:, :, cur_len] = flat_index % vocab
        stops = torch.full_like(parent, cur_len + 1 >= max_len, dtype=torch.bool)
        if eos_id is not None:
            stops |= cand[:, :, cur_len] == eos_id

        # Live beams for the next step: the best unfinished candidates.
        live_scores = cand_scores + stops.float() * _IMPOSSIBLE
        keep = torch.topk(live_scores, num_beams).indices
        running = torch.take_along_dim(cand, keep.unsqueeze(-1), dim=1)
        running_scores = torch.take_along_dim(live_scores, keep, dim=1)
        next_logits.reorder((torch.take_along_dim(parent, keep, dim=1) + row_offset).flatten())

        # Finished hypotheses: merge the new ones into the best num_beams so far.
        just_done = stops & in_top_beams
        new_scores = cand_scores / ((cur_len + 1 - prompt_len) ** length_penalty)
        new_scores = new_scores + (~can_improve).float() * _IMPOSSIBLE + (~just_done).float() * _IMPOSSIBLE
        merged_scores = torch.cat([done_scores, new_scores], dim=1)
        best = torch.topk(merged_scores, num_beams).indices
        done = torch.take_along_dim(torch.cat([done, cand], dim=1), best.unsqueeze(-1), dim=1)
        done_scores = torch.take_along_dim(merged_scores, best, dim=1)
        merged_lengths = torch.cat([done_lengths, torch.full_like(parent, cur_len + 1)], dim=1)
        done_lengths = torch.take_along_dim(merged_lengths, best, dim=1)
        done_filled = torch.take_along_dim(torch.cat([done_filled, just_done], dim=1), best, dim=1)

        cur_len += 1
        best_live = running_scores[:, :1] / ((cur_len - prompt_len) ** length_penalty)
        worst_done = torch.where(done_filled, done_scores.min(dim=1, keepdim=True).values, _IMPOSSIBLE)
        can_improve = can_improve & (best_live > worst_done).any(dim=1, keepdim=True)
        if not bool(can_improve.any()) or bool(stops.all()):
            break

    out_len = int(done_lengths[:, 0].max())
    return done[:, 0, :out_len]
