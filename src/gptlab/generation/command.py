"""What `python generate.py` does, given its config (conf/generate.yaml) as a plain dict: check the
options, load the model, continue each prompt, print (or stream) the texts."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping

import torch

from gptlab.checkpoints.loading import require_one_model_source
from gptlab.core.errors import ConfigError
from gptlab.core.files import read_user_text
from gptlab.generation.decoding import check_sampling_args, generate, start_ids


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
    if cfg.get("context_length") is not None:
        _integer(cfg, "context_length", 1)
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
    require_one_model_source(cfg.get("ckpt_path"), cfg.get("init_from"))


def read_prompts(prompt: object, prompt_file: str | None) -> list[str | None]:
    """The prompts to continue; [None] means "no prompt" (start from the start-of-text token)."""
    if prompt is not None and prompt_file:
        raise ConfigError("pass either prompt= or prompt_file=, not both")
    if prompt_file:  # prompt_file=-: the prompt piped in
        prompts = [read_user_text(prompt_file, "prompt_file", standard_input=True)]
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
    return start_ids(tokenizer), False


def _completion_ids(row: list[int], eos_id: int | None) -> list[int]:
    if eos_id is not None and eos_id in row:
        return row[: row.index(eos_id)]
    return row


def generation_window(requested: int | None, loaded) -> int:
    """How many tokens each new token may attend to: by default the window the model was trained on
    (positions past it were never trained); more is allowed, up to the model's context, with a warning."""
    if requested is None:
        return loaded.trained_window
    if requested > loaded.context_length:
        raise ConfigError(
            f"context_length={requested} is longer than the model's context ({loaded.context_length} "
            f"positions); use context_length={loaded.context_length} or less"
        )
    if requested > loaded.trained_window:
        print(
            f"warning: context_length={requested} reaches past the {loaded.trained_window}-token window "
            "the model was trained on: positions beyond it were never trained and may degrade the text",
            file=sys.stderr,
            flush=True,
        )
    return requested


def generate_from_config(cfg: Mapping, out=None) -> list[str]:
    """Load the model named by ``cfg``, continue each prompt, print the texts and return them."""
    from gptlab.checkpoints.loading import load_for_generation, resolve_device, resolve_dtype

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
        context_length=generation_window(cfg.get("context_length"), loaded),
        temperature=cfg.get("temperature"),
        top_k=cfg.get("top_k"),
        eos_id=tokenizer.eos_id,
        generator=generator,
        top_p=cfg.get("top_p"),
        num_beams=cfg.get("num_beams", 1),
        length_penalty=float(cfg.get("length_penalty", 1.0)),
        use_cache=bool(cfg.get("use_cache", True)),
        vocab_size=tokenizer.vocab_size,
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
