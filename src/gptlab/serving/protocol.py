"""The request and error shapes of OpenAI's completions API, as far as this server speaks it.

A request is read and checked here, before it reaches the model: an unknown field, a wrong type or a value
out of range is a 400 in OpenAI's error shape, naming the field. ``top_k`` and ``num_beams`` are this
server's extensions (generate.py's options of the same names). OpenAI's fields it does not implement
(penalties, logit_bias, logprobs, best_of, suffix) are taken at the values that ask for nothing, as clients
send them by default, and refused with a 400 otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from gptlab.config.ranges import TORCH_SEEDS


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

    prompt: StrictStr | list[StrictStr]
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
    # OpenAI's fields this server does not implement, taken at the values that ask for nothing (NOT_IMPLEMENTED):
    # clients such as LangChain's OpenAI send frequency_penalty 0, presence_penalty 0 and logprobs null in
    # every request, and an unknown-field 400 for them kept such a client from working at all.
    best_of: Any = None
    frequency_penalty: Any = None
    presence_penalty: Any = None
    logit_bias: Any = None
    logprobs: Any = None
    suffix: Any = None


# Each of those fields -> (whether a value asks for nothing, and is then taken with no effect; what does).
NOT_IMPLEMENTED = {
    "best_of": (lambda value, request: value is None or value in (1, request.n), "1"),  # best of n returned: no choice
    "frequency_penalty": (lambda value, request: value is None or _is_zero(value), "0"),
    "presence_penalty": (lambda value, request: value is None or _is_zero(value), "0"),
    "logit_bias": (lambda value, request: value is None or value == {}, "{}"),
    "logprobs": (lambda value, request: value is None, "null"),  # 0 still asks for the chosen tokens' log-probs
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


def parse_completion_request(body: bytes, limits: Limits) -> CompletionRequest:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"the body is not valid JSON ({err}); send a JSON object such as {{\"prompt\": \"Hello\"}}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object such as {\"prompt\": \"Hello\"}")
    if _token_ids(data.get("prompt")):
        # OpenAI takes a prompt of token ids too; pydantic's "Input should be a valid string" said not what.
        raise ApiError(400, "'prompt' of token ids is not taken here: send text (a string or a list of strings)", "prompt")
    try:
        request = CompletionRequest.model_validate(data)
    except ValidationError as err:
        raise _first_problem(err) from None
    check_ranges(request, limits)
    return request


def _token_ids(prompt) -> bool:
    """[1, 2] or [[1, 2], [3]]: OpenAI's token-id prompts."""
    if not isinstance(prompt, list) or not prompt:
        return False
    rows = prompt if all(isinstance(p, list) for p in prompt) else [prompt]
    return all(row and all(isinstance(t, int) and not isinstance(t, bool) for t in row) for row in rows)


def _first_problem(err: ValidationError) -> ApiError:
    problem = err.errors()[0]
    field = str(problem["loc"][0]) if problem["loc"] else None
    if problem["type"] == "extra_forbidden":
        return ApiError(400, f"unknown field {field!r}; this server takes {FIELDS}", field, code="unknown_field")
    if problem["type"] == "missing":
        return ApiError(400, f"{field!r} is required", field)
    given = problem.get("input")
    return ApiError(400, f"{field!r} has the wrong type or value ({json.dumps(given)[:80]}): {problem['msg']}", field)


def check_ranges(request: CompletionRequest, limits: Limits) -> None:
    prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
    if not prompts or any(p == "" for p in prompts):
        raise ApiError(400, "'prompt' is empty; give some text to continue", "prompt")
    if not 1 <= request.max_tokens <= limits.max_tokens:
        raise ApiError(400, f"'max_tokens' must be between 1 and this server's limit {limits.max_tokens}, got {request.max_tokens}", "max_tokens")
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


def prompts_of(request: CompletionRequest) -> list[str]:
    return [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
