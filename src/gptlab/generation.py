"""Autoregressive decoding for any gptlab model (ids (B, T) -> logits (B, T, V)).

Sampling (temperature, top-k, top-p), greedy decoding and beam search. A model that offers a KV cache
(``new_kv_cache``: our GPT) is fed one new token per step; any other model (TransformerDecoderLM) re-reads
its whole window each step. Both give the same tokens.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gptlab.errors import ConfigError

# Scores of impossible beams: large and negative, but finite so that sums stay ordered (as in transformers).
_IMPOSSIBLE = -1.0e9
_shown_notices: set[str] = set()


def notice_once(message: str) -> None:
    """Print a one-line note on stderr the first time it comes up in this process."""
    if message not in _shown_notices:
        _shown_notices.add(message)
        print(f"note: {message}", file=sys.stderr)


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


class NextTokenLogits:
    """Next-token logits (B, V) for a batch of growing sequences.

    While the sequences fit the context window, a model with a KV cache gets only the tokens it has not
    seen. Past the window, the window slides: every position shifts, so cached keys (computed at their old
    positions) no longer apply and each step re-reads the last ``context_length`` tokens, exactly as the
    uncached path does.
    """

    def __init__(self, model: nn.Module, context_length: int, use_cache: bool = True):
        # A torch.compile'd model would recompile for every cache length: decode with the original module.
        self.model = getattr(model, "_orig_mod", model)
        self.context_length = context_length
        self.use_cache = use_cache and hasattr(self.model, "new_kv_cache")
        self.cache = None

    def __call__(self, idx: torch.Tensor) -> torch.Tensor:
        seq_len = idx.size(1)
        if self.use_cache and seq_len <= self.context_length:
            if self.cache is None:
                self.cache = self.model.new_kv_cache()
            logits = self.model(idx[:, self.cache.length :], kv_cache=self.cache, last_only=True)
            return logits[:, -1, :].float()
        if seq_len > self.context_length:
            self.cache = None
            notice_once(
                f"the text is longer than the model's context_length={self.context_length}: the window "
                f"slides, so each new token sees only the last {self.context_length} tokens"
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
) -> torch.Tensor:
    """Append up to ``max_new_tokens`` tokens to ``idx`` (B, T) and return the ids (B, T + new).

    ``temperature`` 0 decodes greedily (None means 1.0); ``top_k``/``top_p`` restrict sampling. A sequence
    that emits ``eos_id`` is finished: later positions of that row hold ``eos_id`` while the others go on,
    and decoding stops once every row is finished. ``num_beams`` > 1 runs beam search (as transformers'
    ``generate(num_beams=..., do_sample=False)``) and returns the best beam of each row. ``on_tokens`` is
    called with each step's new ids (B, 1), for streaming. Prompts may grow past ``context_length``.
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
    try:
        if num_beams > 1:
            return _beam_search(
                model, idx, max_new_tokens, context_length, num_beams, eos_id, length_penalty, use_cache
            )
        return _sample(
            model,
            idx,
            max_new_tokens,
            context_length,
            1.0 if temperature is None else temperature,
            top_k,
            top_p,
            eos_id,
            generator,
            use_cache,
            on_tokens,
        )
    finally:
        model.train(was_training)


def _sample(
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    context_length: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    eos_id: int | None,
    generator: torch.Generator | None,
    use_cache: bool,
    on_tokens: Callable[[torch.Tensor], None] | None,
) -> torch.Tensor:
    next_logits = NextTokenLogits(model, context_length, use_cache)
    finished = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
    for _ in range(max_new_tokens):
        logits = next_logits(idx)
        if temperature == 0:
            next_id = logits.argmax(dim=-1, keepdim=True)
        else:
            probs = torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
            next_id = torch.multinomial(probs, num_samples=1, generator=generator)
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
    model: nn.Module,
    idx: torch.Tensor,
    max_new_tokens: int,
    context_length: int,
    num_beams: int,
    eos_id: int | None,
    length_penalty: float,
    use_cache: bool,
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

    next_logits = NextTokenLogits(model, context_length, use_cache)
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


class TextStream:
    """Prints a sequence's text as its tokens arrive.

    Decodes the whole sequence each time and prints what is new, holding back a trailing partial UTF-8
    character (byte-level BPE may split one character over several tokens).
    """

    def __init__(self, decode: Callable[[list[int]], str], prefix_ids: list[int], out=None):
        self.decode = decode
        self.ids = list(prefix_ids)
        self.printed = len(decode(self.ids)) if self.ids else 0
        self.out = out or sys.stdout

    def add(self, new_ids: list[int]) -> None:
        self.ids.extend(new_ids)
        text = self.decode(self.ids)
        if text.endswith("\ufffd"):
            return
        self.out.write(text[self.printed :])
        self.out.flush()
        self.printed = len(text)

    def finish(self) -> None:
        text = self.decode(self.ids)
        self.out.write(text[self.printed :] + "\n")
        self.out.flush()


# --------------------------------------------------------------------------------------------------
# What `python generate.py` does, given its config (conf/generate.yaml) as a plain dict.

SEPARATOR = "-" * 40


def _integer(cfg: Mapping, key: str, minimum: int) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _optional_number(cfg: Mapping, key: str, kind: type) -> float | int | None:
    value = cfg.get(key)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and not isinstance(value, int))
    ):
        expected = "an integer" if kind is int else "a number"
        raise ConfigError(f"{key} must be {expected} (or null), got {value!r}")
    return value


def check_generation_config(cfg: Mapping) -> None:
    """Every option of generate.py that can be checked before a model is loaded."""
    _integer(cfg, "max_new_tokens", 1)
    num_samples = _integer(cfg, "num_samples", 1)
    temperature = _optional_number(cfg, "temperature", float)
    top_k = _optional_number(cfg, "top_k", int)
    top_p = _optional_number(cfg, "top_p", float)
    num_beams = cfg.get("num_beams", 1)
    check_sampling_args(temperature, top_k, top_p, num_beams)
    if num_beams > 1 and num_samples > 1:
        raise ConfigError(
            f"beam search (num_beams={num_beams}) returns one best sequence per prompt, so num_samples="
            f"{num_samples} does not apply; drop it, or use num_beams=1 to sample"
        )
    if num_beams > 1 and cfg.get("stream"):
        raise ConfigError(
            "stream=true needs num_beams=1: beam search knows its best sequence only at the end"
        )
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed must be an integer (or null for a random one), got {seed!r}")
    if cfg.get("ckpt_path") and cfg.get("init_from"):
        raise ConfigError(
            "pass either ckpt_path= (a gptlab checkpoint) or init_from= (GPT-2 weights), not both"
        )
    if not cfg.get("ckpt_path") and not cfg.get("init_from"):
        raise ConfigError(
            "nothing to generate from: pass ckpt_path=<a .ckpt written by train.py> "
            "or init_from=<gpt2, gpt2-medium, gpt2-large, gpt2-xl or a Hugging Face folder>"
        )


def read_prompts(prompt: object, prompt_file: str | None) -> list[str | None]:
    """The prompts to continue; [None] means "no prompt" (start from the start-of-text token)."""
    if prompt is not None and prompt_file:
        raise ConfigError("pass either prompt= or prompt_file=, not both")
    if prompt_file:
        path = Path(prompt_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"prompt_file={prompt_file} does not exist")
        prompts = [path.read_text(encoding="utf-8")]
    elif prompt is None:
        return [None]
    elif isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, (list, tuple)):
        prompts = [str(p) for p in prompt]
        if not prompts:
            raise ConfigError("prompt=[] is an empty list; give at least one prompt (or leave prompt unset)")
    else:
        prompts = [str(prompt)]  # Hydra turns prompt=42 into a number
    for text in prompts:
        if text == "":
            source = f"prompt_file={prompt_file}" if prompt_file else "prompt"
            raise ConfigError(f"{source} is empty; give some text to continue, or leave prompt unset")
    return prompts


def _prompt_ids(tokenizer, prompt: str | None) -> tuple[list[int], bool]:
    """Token ids of a prompt and whether to show them; no prompt starts at EOS (or a newline)."""
    if prompt is not None:
        return tokenizer.encode(prompt), True
    if tokenizer.eos_id is not None:
        return [tokenizer.eos_id], False
    chars = getattr(tokenizer, "chars", "")
    return tokenizer.encode("\n" if "\n" in chars or not chars else chars[0]), False


def _completion_ids(row: list[int], eos_id: int | None) -> list[int]:
    if eos_id is not None and eos_id in row:
        return row[: row.index(eos_id)]
    return row


def generate_from_config(cfg: Mapping, out=None) -> list[str]:
    """Load the model named by ``cfg``, continue each prompt, print the texts and return them."""
    from gptlab.checkpoints import load_for_generation, resolve_device, resolve_dtype

    out = out or sys.stdout
    check_generation_config(cfg)
    prompts = read_prompts(cfg.get("prompt"), cfg.get("prompt_file"))
    device = resolve_device(cfg.get("device"))
    loaded = load_for_generation(
        cfg.get("ckpt_path"), cfg.get("init_from"), device, resolve_dtype(cfg.get("dtype"))
    )
    tokenizer = loaded.tokenizer
    generator = torch.Generator(device=device)
    if cfg.get("seed") is None:
        generator.seed()
    else:
        generator.manual_seed(cfg["seed"])
    options = dict(
        max_new_tokens=cfg["max_new_tokens"],
        context_length=loaded.context_length,
        temperature=cfg.get("temperature"),
        top_k=cfg.get("top_k"),
        eos_id=tokenizer.eos_id,
        generator=generator,
        top_p=cfg.get("top_p"),
        num_beams=cfg.get("num_beams", 1),
        length_penalty=float(cfg.get("length_penalty", 1.0)),
        use_cache=bool(cfg.get("use_cache", True)),
    )
    num_samples = cfg["num_samples"]
    texts = []
    for prompt in prompts:
        prompt_ids, shown = _prompt_ids(tokenizer, prompt)
        shown_ids = prompt_ids if shown else []
        if cfg.get("stream"):
            for _ in range(num_samples):
                texts.append(_stream_one(loaded, prompt_ids, shown_ids, options, device, out))
                print(SEPARATOR, file=out)
            continue
        idx = torch.tensor([prompt_ids] * num_samples, dtype=torch.long, device=device)
        rows = generate(loaded.model, idx, **options)[:, len(prompt_ids) :].tolist()
        for row in rows:
            text = tokenizer.decode(shown_ids + _completion_ids(row, tokenizer.eos_id))
            texts.append(text)
            print(text, file=out)
            print(SEPARATOR, file=out)
    return texts


def _stream_one(loaded, prompt_ids: list[int], shown_ids: list[int], options: dict, device, out) -> str:
    tokenizer = loaded.tokenizer
    stream = TextStream(tokenizer.decode, shown_ids, out)
    out.write(tokenizer.decode(shown_ids) if shown_ids else "")

    def on_tokens(new_ids: torch.Tensor) -> None:
        token = int(new_ids[0, 0])
        if token != tokenizer.eos_id:
            stream.add([token])

    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    generate(loaded.model, idx, **options, on_tokens=on_tokens)
    stream.finish()
    return tokenizer.decode(stream.ids)
