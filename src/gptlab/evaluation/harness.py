"""gptlab models inside lm-evaluation-harness: ``GptlabLM``, registered as lm-eval's model ``gptlab``.

    gptlab-lm-eval --model gptlab --model_args ckpt_path=outputs/DATE/TIME --tasks hellaswag
    gptlab-lm-eval --model gptlab --model_args init_from=gpt2,dtype=bfloat16 --tasks lambada_openai

``gptlab-lm-eval`` is lm-eval's own command line (every option of ``lm_eval``) with this model registered:
lm-eval 0.4.13 finds models only in its own source tree (no plugin entry points; lm-eval#1457, #3282).
From Python: ``lm_eval.simple_evaluate(model=GptlabLM(ckpt_path=...), tasks=[...])``.

Scoring is lm-eval's: ``TemplateLM`` splits each (context, continuation) at the token boundary and this
class scores the token pairs (``score_token_pairs``, as eval.py does); rolling log-likelihoods use lm-eval's
own disjoint windows; generation is greedy (or sampled) through gptlab's KV-cache decoder and cut at the
task's stop strings as lm-eval's ``hf`` model cuts them. Written against lm-eval 0.4.13.
"""

from __future__ import annotations

import contextlib
import inspect
import sys

import lm_eval.models  # noqa: F401  (first: lm-eval fills its registry with its own models only while it is empty)
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, simple_parse_args_string
from tqdm import tqdm

from gptlab.checkpoints.loading import load_for_generation, resolve_device, resolve_dtype
from gptlab.config.unknown_keys import unknown_key_message
from gptlab.core.errors import ConfigError
from gptlab.evaluation.loglikelihood import score_token_pairs
from gptlab.generation.decoding import generate
from gptlab.models.language_model import language_model

# Generation options this model understands (lm-eval's normalised names); others are refused by name.
GENERATION_OPTIONS = {"until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p"}


def _positive_int(name: str, value) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise ConfigError(f"--model_args {name}={value!r} must be a positive integer")
    return number


@register_model("gptlab")
class GptlabLM(TemplateLM):
    """A gptlab checkpoint (``ckpt_path``) or pretrained GPT-2 weights (``init_from``) as an lm-eval model.

    ``max_length``: the window (default: the window the model was trained on, as eval.py); ``batch_size``:
    sequences per forward pass (lm-eval's ``--batch_size``; ``auto`` means 8); ``device``: auto, cpu, cuda,
    mps; ``dtype``: float32, bfloat16, float16.
    """

    def __init__(
        self,
        ckpt_path: str | None = None,
        init_from: str | None = None,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int | str = 8,
        max_batch_size: int | None = None,  # lm-eval passes it; batches here are never searched for
        max_length: int | None = None,
        max_gen_toks: int = 256,
        seed: int = 1234,
    ):
        super().__init__()
        if str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's command line asks for cuda:0 when --device is not given; its hf model falls back too.
            print(f"device={device} is not available here; using device=auto", file=sys.stderr)
            device = "auto"
        self._device = resolve_device(device)
        self.loaded = load_for_generation(ckpt_path, init_from, self._device, resolve_dtype(dtype))
        self.model = self.loaded.model
        self.gptlab_tokenizer = self.loaded.tokenizer
        if self.gptlab_tokenizer.eos_id is None:
            raise ConfigError(
                f"{self.loaded.source} has a tokenizer without an end-of-text token, which lm-eval needs to "
                "start a text and to stop generating; use a model with a BPE tokenizer"
            )
        self.batch_size = 8 if batch_size == "auto" else _positive_int("batch_size", batch_size)
        self._max_length = _positive_int("max_length", max_length) if max_length else self.loaded.trained_window
        if self._max_length > self.loaded.context_length:
            raise ConfigError(
                f"--model_args max_length={self._max_length} is longer than the model's context "
                f"({self.loaded.context_length} positions)"
            )
        self.max_gen_toks = _positive_int("max_gen_toks", max_gen_toks)
        self.seed = int(seed)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> GptlabLM:
        """The model from lm-eval's ``--model_args`` (``arg_dict``) and its command line's own options
        (``additional_config``: ``--device``, ``--batch_size``, which it passes even when not given, as cuda:0
        and 1). A key this model does not take is one line naming the close one or those it takes, and a key
        in ``--model_args`` wins over the command line's (both were a TypeError traceback from ``__init__``)."""
        known = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
        for key in arg_dict:
            if key not in known:
                raise ConfigError(unknown_key_message(key, known, "gptlab's lm-eval model (--model_args)"))
        options = {key: value for key, value in (additional_config or {}).items() if value is not None}
        return cls(**{**options, **arg_dict})

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> GptlabLM:
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    # What lm-eval reads of a model.
    @property
    def eot_token_id(self) -> int:
        return self.gptlab_tokenizer.eos_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        from gptlab.data.tokenizers import setting_of

        return setting_of(self.gptlab_tokenizer.spec())

    def get_model_info(self) -> dict:
        return {"model_source": self.loaded.source, "checkpoint_step": self.loaded.checkpoint.get("global_step")}

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        # GPT-2's tokenizer adds no special tokens, in lm-eval's hf model or here.
        return self.gptlab_tokenizer.encode(string)

    def tok_decode(self, ids: list[int]) -> str:
        return self.gptlab_tokenizer.decode(ids)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        pairs = [(context, continuation) for _, context, continuation in requests]
        scored = score_token_pairs(self.model, pairs, self.max_length, self.batch_size, self.device)
        for (key, _, _), score in zip(requests, scored, strict=True):
            self.cache_hook.add_partial("loglikelihood", key, (score.loglikelihood, score.is_greedy))
        return [(score.loglikelihood, score.is_greedy) for score in scored]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Each text's total log-likelihood, every token scored once in lm-eval's disjoint windows (the
        first token after the end-of-text token)."""
        windows, owners = [], []
        for index, (text,) in enumerate(request.args for request in requests):
            ids = self.tok_encode(text)
            for window in get_rolling_token_windows(ids, self.prefix_token_id, self.max_length, context_len=1):
                windows.append(make_disjoint_window(window))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, score in zip(owners, score_token_pairs(self.model, windows, self.max_length, self.batch_size, self.device), strict=True):
            totals[owner] += score.loglikelihood
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        generator = torch.Generator(device=self.device).manual_seed(self.seed)
        eos = self.tok_decode([self.eot_token_id])
        texts = []
        for context, gen_kwargs in tqdm([r.args for r in requests], disable=disable_tqdm, desc="generate_until"):
            options = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
            unknown = sorted(set(options) - GENERATION_OPTIONS)
            if unknown:
                raise ConfigError(f"gptlab's lm-eval model does not take the generation option(s) {', '.join(unknown)}")
            until = handle_stop_sequences(options.get("until"), eos=eos)
            text = self._generate_one(context, until, options, generator)
            self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            texts.append(text)
        return texts

    def _generate_one(self, context: str, until: list[str], options: dict, generator) -> str:
        max_new = options["max_gen_toks"]
        room = self.max_length - max_new
        if room < 1:
            raise ConfigError(f"max_gen_toks={max_new} leaves no room for a context in max_length={self.max_length}")
        prompt = self.tok_encode(context)[-room:] or [self.eot_token_id]
        new_ids: list[int] = []

        def stop_at_stop_strings(step_ids: torch.Tensor) -> None:
            new_ids.extend(step_ids[0].tolist())
            if any(stop and stop in self.tok_decode(new_ids) for stop in until):
                raise _Stopped

        sampling = options.get("do_sample")
        with contextlib.suppress(_Stopped):  # a stop string ended it early
            generate(
                self.model,
                torch.tensor([prompt], device=self.device),
                max_new,
                self.max_length,
                temperature=options.get("temperature", 1.0) if sampling else 0.0,
                top_k=options.get("top_k") if sampling else None,
                top_p=options.get("top_p") if sampling else None,
                generator=generator,
                on_tokens=stop_at_stop_strings,
                vocab_size=language_model(self.model).vocab_size,
            )
        return postprocess_generated_text(self.tok_decode(new_ids), until, think_end_token=None)


class _Stopped(Exception):
    """Ends generation early: a stop string has appeared."""


def main() -> None:
    """``gptlab-lm-eval``: lm-eval's command line, with the ``gptlab`` model registered (by this module's
    import) and gptlab's mistakes as one line."""
    from lm_eval.__main__ import cli_evaluate

    from gptlab.core.entrypoint import report_user_errors

    with report_user_errors():
        cli_evaluate()


if __name__ == "__main__":
    sys.exit(main())
