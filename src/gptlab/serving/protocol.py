"""The request and error shapes of OpenAI's completions API, as far as this server speaks it.

A request is read and checked here, before it reaches the model: an unknown field, a wrong type or a value
out of range is a 400 in OpenAI's error shape, naming the field. ``top_k`` and ``num_beams`` are this
server's extensions (generate.py's options of the same names). A prompt is text or OpenAI's token ids, and
``logprobs`` (with ``echo``, the prompt's too) is what lm-evaluation-harness's ``local-completions`` model
scores with. OpenAI's fields it does not implement (penalties, logit_bias, best_of, suffix) are taken at the
values that ask for nothing, as clients send them by default, and refused with a 400 otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from gptlab.config.ranges import TORCH_SEEDS

MAX_LOGPROBS = 5  # OpenAI's limit for completions


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


Number = StrictFloat | StrictInt


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]  # text, or token ids
    model: StrictStr | None = None
    max_tokens: StrictInt = 16
    temperature: Number = 1.0
    top_p: Number = 1.0
    top_k: StrictInt | None = None
    num_beams: StrictInt = 1
    n: StrictInt = 1
    stop: StrictStr | list[StrictStr] | None = None
    seed: StrictInt | None = None
    echo: StrictBool = False
    stream: StrictBool = False
    stream_options: dict | None = None
    user: StrictStr | None = None  # an end user's id, as OpenAI takes it; not used
    logprobs: StrictInt | None = None  # the chosen tokens' log-probabilities and this many most likely at each
    # OpenAI's fields this server does not implement, taken at the values that ask for nothing (NOT_IMPLEMENTED):
    # clients such as LangChain's OpenAI send frequency_penalty 0 and presence_penalty 0 in every request, and
    # an unknown-field 400 for them kept such a client from working at all.
    best_of: Any = None
    frequency_penalty: Any = None
    presence_penalty: Any = None
    logit_bias: Any = None
    suffix: Any = None


# Each of those fields -> (whether a value asks for nothing, and is then taken with no effect; what does).
NOT_IMPLEMENTED = {
    "best_of": (lambda value, request: value is None or value in (1, request.n), "1"),  # best of n returned: no choice
    "frequency_penalty": (lambda value, request: value is None or _is_zero(value), "0"),
    "presence_penalty": (lambda value, request: value is None or _is_zero(value), "0"),
    "logit_bias": (lambda value, request: value is None or value == {}, "{}"),
    "suffix": (lambda value, request: value is None or value == "", '""'),
}


def _is_zero(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 0


FIELDS = ", ".join(name for name in CompletionRequest.model_fields if name not in NOT_IMPLEMENTED)


@dataclass(frozen=True)
class Limits:
    max_prompt_tokens: int
    max_tokens: int
    max_n: int


class TokenizeRequest(BaseModel):
    """vLLM's POST /tokenize: the ids of a text (this server's tokenizers add no special tokens)."""

    model_config = ConfigDict(extra="forbid")
    prompt: StrictStr
    model: StrictStr | None = None
    add_special_tokens: StrictBool = True


class DetokenizeRequest(BaseModel):
    """vLLM's POST /detokenize: the text of token ids."""

    model_config = ConfigDict(extra="forbid")
    tokens: list[StrictInt]
    model: StrictStr | None = None


def parse_body(body: bytes, shape: type[BaseModel]) -> BaseModel:
    """A JSON object read into ``shape``; anything else a 400 naming what is wrong."""
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the body is not valid JSON ({err}); send a JSON object such as {{\"prompt\": \"Hello\"}}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object such as {\"prompt\": \"Hello\"}")
    try:
        return shape.model_validate(data)
    except ValidationError as err:
        raise _first_problem(err, shape) from None


def parse_completion_request(body: bytes, limits: Limits) -> CompletionRequest:
    request = parse_body(body, CompletionRequest)
    check_ranges(request, limits)
    return request


def _first_problem(err: ValidationError, shape: type[BaseModel]) -> ApiError:
    problem = err.errors()[0]
    field = str(problem["loc"][0]) if problem["loc"] else None
    if problem["type"] == "extra_forbidden":
        fields = FIELDS if shape is CompletionRequest else ", ".join(shape.model_fields)
        return ApiError(400, f"unknown field {field!r}; this route takes {fields}", field, code="unknown_field")
    if problem["type"] == "missing":
        return ApiError(400, f"{field!r} is required", field)
    given = problem.get("input")
    if field == "prompt" and shape is CompletionRequest:  # a union's every branch failed: pydantic's message names only one of them
        return ApiError(400, f"'prompt' has the wrong type ({json.dumps(given)[:80]}): send a string, a list of strings, "
                        "a list of token ids or a list of such lists", field)
    return ApiError(400, f"{field!r} has the wrong type or value ({json.dumps(given)[:80]}): {problem['msg']}", field)


def check_ranges(request: CompletionRequest, limits: Limits) -> None:
    prompts = prompts_of(request)
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ApiError(400, "'prompt' is empty; give some text (or token ids) to continue", "prompt")
    # 0 with echo: the prompt alone, scored with logprobs (how OpenAI's completions API scored a text, and
    # lm-evaluation-harness before 0.4 with it); without echo it would answer nothing.
    lowest = 0 if request.echo else 1
    if not lowest <= request.max_tokens <= limits.max_tokens:
        zero = " (0 only with 'echo': the prompt scored, nothing generated)" if request.max_tokens == 0 else ""
        raise ApiError(400, f"'max_tokens' must be between 1 and this server's limit {limits.max_tokens}, got "
                       f"{request.max_tokens}{zero}", "max_tokens")
    if not 0 <= request.temperature <= 2:
        raise ApiError(400, f"'temperature' must be between 0 and 2, got {request.temperature}", "temperature")
    if not 0 < request.top_p <= 1:
        raise ApiError(400, f"'top_p' must be in (0, 1], got {request.top_p}", "top_p")
    if request.top_k is not None and request.top_k < 1:
        raise ApiError(400, f"'top_k' must be at least 1, got {request.top_k}", "top_k")
    if not 1 <= request.n <= limits.max_n:
        raise ApiError(400, f"'n' must be between 1 and this server's limit {limits.max_n}, got {request.n}", "n")
    if request.num_beams < 1:
        raise ApiError(400, f"'num_beams' must be at least 1, got {request.num_beams}", "num_beams")
    if request.num_beams > 1 and (request.stream or request.n > 1):
        raise ApiError(400, "'num_beams' > 1 returns one best completion at the end: it takes neither 'stream' nor 'n' > 1", "num_beams")
    sampling = sampling_fields(request)
    if request.num_beams > 1 and sampling:
        # Only what the client set: OpenAI's default temperature of 1 is no request to sample.
        raise ApiError(400, f"'num_beams' > 1 is deterministic beam search: it takes no {', '.join(map(repr, sampling))}; "
                       "drop it, or use 'num_beams': 1 to sample", "num_beams")
    if request.seed is not None and not TORCH_SEEDS[0] <= request.seed <= TORCH_SEEDS[1]:
        # torch's generator cannot take it: the whole batch it joined would fail.
        raise ApiError(400, f"'seed' must be between {TORCH_SEEDS[0]} and {TORCH_SEEDS[1]}, got {request.seed}", "seed")
    if request.logprobs is not None and not 0 <= request.logprobs <= MAX_LOGPROBS:
        raise ApiError(400, f"'logprobs' must be between 0 and {MAX_LOGPROBS} (the most likely tokens given at each position), "
                       f"got {request.logprobs}", "logprobs")
    if request.logprobs is not None and request.stream:
        raise ApiError(400, "'logprobs' come with the whole completion here, not streamed: set 'stream': false, or drop "
                       "'logprobs'", "logprobs", code="unsupported_parameter")
    if request.stream_options is not None and not request.stream:
        raise ApiError(400, "'stream_options' applies to a streamed completion only: set 'stream': true, or drop it", "stream_options")
    for name, (asks_for_nothing, neutral) in NOT_IMPLEMENTED.items():
        value = getattr(request, name)
        if not asks_for_nothing(value, request):
            raise ApiError(400, f"'{name}' is not implemented by this server (got {json.dumps(value)[:80]}): leave it out "
                           f"or send {neutral}", name, code="unsupported_parameter")
    stops = stop_strings(request)
    if len(stops) > 4 or any(s == "" for s in stops):
        raise ApiError(400, "'stop' takes up to 4 non-empty strings", "stop")


def sampling_fields(request: CompletionRequest) -> list[str]:
    """The sampling settings the client set to anything but their no-op (temperature 0, top_p 1)."""
    given = request.model_fields_set
    neutral = {"temperature": 0, "top_p": 1, "top_k": None}
    return [name for name, value in neutral.items() if name in given and getattr(request, name) != value]


def stop_strings(request: CompletionRequest) -> list[str]:
    if request.stop is None:
        return []
    return [request.stop] if isinstance(request.stop, str) else list(request.stop)


def prompts_of(request: CompletionRequest) -> list[str | list[int]]:
    """The prompts, each a text or a list of token ids."""
    prompt = request.prompt
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        return [prompt]
    return list(prompt)
