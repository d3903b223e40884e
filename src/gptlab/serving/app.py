"""The HTTP side: FastAPI routes in OpenAI's shapes, the page, the limits and the API key.

Every error a client can cause is a 4xx in OpenAI's error shape, and the server goes on serving: a malformed
or oversized body, an unknown field or route, a value out of range, a wrong or missing key, too many requests
at once (429). Nothing a request says names a file: the model was chosen when the server started.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from gptlab.data.tokenizers import UnknownCharacters
from gptlab.serving.engine import Engine, Job
from gptlab.serving.protocol import (
    ApiError,
    DetokenizeRequest,
    Limits,
    TokenizeRequest,
    parse_body,
    parse_completion_request,
    prompts_of,
    stop_strings,
)

# Seconds between checks that a waiting client is still there (and SSE keep-alive comments).
POLL_SECONDS = 0.5


class ServerState:
    def __init__(self, max_concurrent: int):
        self.max_concurrent = max_concurrent
        self.active = 0  # requests generating or waiting for the model (touched on the event loop only)

    def acquire(self) -> None:
        if self.active >= self.max_concurrent:
            raise ApiError(429, f"the server is at its limit of {self.max_concurrent} concurrent requests; retry shortly",
                           kind="rate_limit_error", code="too_many_requests")
        self.active += 1

    def release(self) -> None:
        self.active -= 1


def create_app(engine: Engine, info: dict, limits: Limits, max_concurrent: int, max_body_bytes: int, api_key: str | None) -> FastAPI:
    app = FastAPI(title="gptlab", docs_url=None, redoc_url=None)  # the docs pages load scripts from a CDN
    state = ServerState(max_concurrent)
    model_id = info["model"]
    page = resources.files("gptlab.serving").joinpath("page/index.html").read_text(encoding="utf-8")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            length = max_body_bytes + 1
        if length > max_body_bytes or (request.method == "POST" and len(await request.body()) > max_body_bytes):
            return error_response(ApiError(413, f"the body is larger than this server's limit of {max_body_bytes} bytes", code="body_too_large"))
        if api_key is not None and request.url.path not in ("/", "/health"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                return error_response(ApiError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", kind="authentication_error", code="invalid_api_key"))
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return error_response(err)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        routes = "POST /v1/completions, GET /v1/models, GET /health, GET /, and vLLM's POST /tokenize, POST /detokenize, GET /tokenizer_info"
        message = {404: f"no such route {request.method} {request.url.path}; this server has {routes}",
                   405: f"{request.method} is not allowed on {request.url.path}; this server has {routes}"}
        return error_response(ApiError(err.status_code, message.get(err.status_code, str(err.detail))))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception):
        return error_response(ApiError(500, "internal error; the server logged it", kind="server_error"))

    @app.get("/", response_class=HTMLResponse)
    async def index():
        return page

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_id, "active_requests": state.active, "cancelled_requests": engine.cancelled,
                "batched_requests": engine.batched}

    @app.get("/info")
    async def model_info():
        return {**info, "api_key_required": api_key is not None, "limits": limits.__dict__}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": info["created"], "owned_by": "gptlab"}]}

    # vLLM's tokenizer routes: lm-evaluation-harness's local-completions model finds them and tokenises with the
    # server's own tokenizer (tokenizer_backend=remote), so a client needs neither the Hub nor a tokenizer copy.
    @app.get("/tokenizer_info")
    async def tokenizer_info():
        tokenizer = engine.tokenizer
        eos = None if tokenizer.eos_id is None else tokenizer.decode([tokenizer.eos_id])
        return {"eos_token": eos, "bos_token": None, "pad_token": None, "model_max_length": engine.context_length,
                "vocab_size": tokenizer.vocab_size, "tokenizer_class": type(tokenizer).__name__}

    @app.post("/tokenize")
    async def tokenize(request: Request):
        body = parse_body(await request.body(), TokenizeRequest)
        ids = encode_prompt(engine.tokenizer, body.prompt)
        return {"tokens": ids, "count": len(ids), "max_model_len": engine.context_length}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        body = parse_body(await request.body(), DetokenizeRequest)
        return {"prompt": engine.tokenizer.decode(checked_ids(engine.tokenizer, body.tokens, "tokens"))}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = parse_completion_request(await request.body(), limits)
        if body.model not in (None, model_id):
            raise ApiError(404, f"model {body.model!r} is not served here; this server serves {model_id!r} (GET /v1/models)",
                           "model", code="model_not_found")
        tokenizer = engine.tokenizer
        given = prompts_of(body)
        prompt_ids = [encode_prompt(tokenizer, p) if isinstance(p, str) else checked_ids(tokenizer, p) for p in given]
        prompts = [p if isinstance(p, str) else tokenizer.decode(p) for p in given]  # what echo repeats
        longest = max(len(ids) for ids in prompt_ids)
        if longest > limits.max_prompt_tokens:
            raise ApiError(400, f"the prompt has {longest} tokens, more than this server's limit of {limits.max_prompt_tokens}", "prompt",
                           code="prompt_too_long")
        state.acquire()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        beams = body.num_beams > 1  # deterministic: the defaults of the sampling settings do not apply
        job = Job(
            prompt_ids=prompt_ids, prefixes=prompts if body.echo else [""] * len(prompts), n=body.n,
            max_tokens=body.max_tokens, temperature=None if beams else float(body.temperature), top_k=body.top_k,
            top_p=None if beams or body.top_p == 1 else float(body.top_p), num_beams=body.num_beams, seed=body.seed,
            stops=stop_strings(body), emit=lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
            on_done=lambda: loop.call_soon_threadsafe(state.release), logprobs=body.logprobs, echo=body.echo,
        )
        engine.submit(job)
        head = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()), "model": model_id}
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(stream_events(job, events, head, include_usage), media_type="text/event-stream")
        return await collect(request, job, events, head, len(prompts) * body.n)

    return app


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """A prompt's ids; one a character vocabulary cannot encode is the client's mistake (400), not ours."""
    try:
        return tokenizer.encode(prompt)
    except UnknownCharacters as err:
        raise ApiError(400, f"'prompt': {err}", "prompt", code="invalid_value") from None


def checked_ids(tokenizer, ids: list[int], field: str = "prompt") -> list[int]:
    """Token ids (of ``field`` of the request), each one the tokenizer has."""
    wrong = next((token for token in ids if not 0 <= token < tokenizer.vocab_size), None)
    if wrong is not None:
        raise ApiError(400, f"'{field}' holds token id {wrong}, outside this model's vocabulary of {tokenizer.vocab_size} ids "
                       f"(0 to {tokenizer.vocab_size - 1})", field, code="invalid_value")
    return list(ids)


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


async def collect(request: Request, job: Job, events: asyncio.Queue, head: dict, count: int) -> Response:
    choices: list[dict | None] = [None] * count
    while True:
        try:
            event = await asyncio.wait_for(events.get(), POLL_SECONDS)
        except TimeoutError:
            if await request.is_disconnected():
                job.cancelled.set()
                return Response(status_code=499)
            continue
        kind = event[0]
        if kind == "choice":
            _, index, text, reason, logprobs = event
            choices[index] = {"text": text, "index": index, "logprobs": logprobs, "finish_reason": reason}
        elif kind == "usage":
            usage = {"prompt_tokens": event[1], "completion_tokens": event[2], "total_tokens": event[1] + event[2]}
            return JSONResponse({**head, "choices": choices, "usage": usage})
        elif kind == "error":
            raise ApiError(500, event[1], kind="server_error")


async def stream_events(job: Job, events: asyncio.Queue, head: dict, include_usage: bool):
    """Server-sent events as OpenAI streams completions: a chunk per new piece of text, a last chunk per
    completion with its finish_reason, the usage if asked, then [DONE]. A client that leaves cancels the job."""

    def chunk(choices: list[dict], **extra) -> str:
        return f"data: {json.dumps({**head, 'choices': choices, **extra})}\n\n"

    try:
        while True:
            try:
                event = await asyncio.wait_for(events.get(), POLL_SECONDS)
            except TimeoutError:
                yield ": waiting\n\n"  # a comment line: a client that has gone makes this write fail
                continue
            kind = event[0]
            if kind == "delta":
                yield chunk([{"text": event[2], "index": event[1], "logprobs": None, "finish_reason": None}])
            elif kind == "choice":
                yield chunk([{"text": "", "index": event[1], "logprobs": None, "finish_reason": event[3]}])
            elif kind == "usage":
                if include_usage:
                    usage = {"prompt_tokens": event[1], "completion_tokens": event[2], "total_tokens": event[1] + event[2]}
                    yield chunk([], usage=usage)
                yield "data: [DONE]\n\n"
                return
            elif kind == "error":
                yield f"data: {json.dumps(ApiError(500, event[1], kind='server_error').body())}\n\n"
                return
    finally:
        job.cancelled.set()  # no-op once the job is done; stops it if the client left
