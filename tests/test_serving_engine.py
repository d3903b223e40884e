"""serving.engine without HTTP: the model's thread, its queue and its batches, driven by jobs as the server
makes them (a character tokenizer of the-verdict, a tiny GPT). A client that leaves while its request is
decoded in a batch stops only its own request, and requests join a running batch in the order they came, so
one that cannot join yet is not overtaken by later ones that could."""

from __future__ import annotations

import threading

import pytest
import torch
from tiny_models import tiny_gpt

from gptlab.checkpoints.loading import LoadedModel
from gptlab.data.tokenizers import CharTokenizer
from gptlab.serving.engine import Engine, Job

WINDOW = 64


@pytest.fixture(scope="module")
def loaded(verdict_text: str) -> LoadedModel:
    tokenizer = CharTokenizer.from_text(verdict_text)
    torch.manual_seed(0)
    model = tiny_gpt(vocab_size=tokenizer.vocab_size, context_length=WINDOW).eval()
    return LoadedModel(model=model, tokenizer=tokenizer, trained_window=WINDOW, source="a tiny GPT")


class Jobs:
    """Makes jobs as the server does and records, in the model thread's order, every event each one emits."""

    def __init__(self, tokenizer: CharTokenizer):
        self.tokenizer = tokenizer
        self.events: list[tuple[str, tuple]] = []
        self.done: dict[str, threading.Event] = {}
        self.done_calls: dict[str, int] = {}

    def make(self, name: str, prompts: list[str], max_tokens: int, *, temperature: float = 0.0,
             seed: int | None = None, on_event=None) -> Job:
        self.done[name], self.done_calls[name] = threading.Event(), 0

        def emit(event: tuple) -> None:
            self.events.append((name, event))
            if on_event is not None:
                on_event(event)

        def on_done() -> None:
            self.done_calls[name] += 1
            self.done[name].set()

        return Job(
            prompt_ids=[self.tokenizer.encode(p) for p in prompts], prefixes=[""] * len(prompts), n=1,
            max_tokens=max_tokens, temperature=temperature, top_k=None, top_p=None, num_beams=1, seed=seed,
            stops=[], emit=emit, on_done=on_done,
        )

    def wait(self, *names: str) -> None:
        for name in names:
            assert self.done[name].wait(60), f"{name} never finished"

    def text(self, name: str) -> str:
        return "".join(event[2] for who, event in self.events if who == name and event[0] == "delta")

    def kinds(self, name: str) -> list[str]:
        return [event[0] for who, event in self.events if who == name]

    def first_delta(self, name: str) -> int:
        return next(i for i, (who, event) in enumerate(self.events) if who == name and event[0] == "delta")


def hold_the_model(engine: Engine, jobs: Jobs) -> threading.Event:
    """Keep the model's thread busy (a two-prompt job runs alone and waits at its first token) until the
    returned event is set: what is submitted meanwhile waits in the queue together, as under load."""
    release = threading.Event()
    engine.submit(jobs.make("gate", ["I", "H"], 2, on_event=lambda event: release.wait(60)))
    return release


def alone(loaded: LoadedModel, prompt: str, max_tokens: int, **settings) -> str:
    jobs = Jobs(loaded.tokenizer)
    engine = Engine(loaded, WINDOW, torch.device("cpu")).start()
    engine.submit(jobs.make("alone", [prompt], max_tokens, **settings))
    jobs.wait("alone")
    return jobs.text("alone")


def test_a_client_leaving_mid_batch_stops_its_request_only(loaded):
    engine = Engine(loaded, WINDOW, torch.device("cpu")).start()
    jobs = Jobs(loaded.tokenizer)
    release = hold_the_model(engine, jobs)
    leaver: list[Job] = []

    def leave_after_two_tokens(event: tuple) -> None:
        if event[0] == "delta" and jobs.kinds("leaver").count("delta") == 2:
            leaver[0].cancelled.set()  # what the server does when the client's connection closes

    leaver.append(jobs.make("leaver", ["I HAD always"], 20, on_event=leave_after_two_tokens))
    requests = {"greedy": ("Gisburn", 20, {}), "sampled": ("I had", 16, {"temperature": 0.9, "seed": 7})}
    engine.submit(leaver[0])
    for name, (prompt, max_tokens, settings) in requests.items():
        engine.submit(jobs.make(name, [prompt], max_tokens, **settings))
    release.set()
    jobs.wait("gate", "leaver", *requests)

    assert engine.batched == 3  # the three waited together and were decoded as one batch
    assert engine.cancelled == 1
    assert jobs.kinds("leaver") == ["delta", "delta"]  # no completion and no usage for a client that left
    assert all(calls == 1 for calls in jobs.done_calls.values()), jobs.done_calls  # every slot freed, once
    for name, (prompt, max_tokens, settings) in requests.items():
        assert jobs.kinds(name)[-2:] == ["choice", "usage"]
        assert jobs.text(name) == alone(loaded, prompt, max_tokens, **settings), name


def test_a_request_that_cannot_join_yet_is_not_overtaken_by_later_ones(loaded):
    """The running batch's padded length is short of the long prompt: it waits, and the short request behind
    it, which could join at once, waits with it; they join together once the batch is long enough."""
    engine = Engine(loaded, WINDOW, torch.device("cpu")).start()
    jobs = Jobs(loaded.tokenizer)
    arrivals = {"long prompt": "I HAD always thought Jack Gisburn", "short prompt": "I"}

    def two_more_arrive(event: tuple) -> None:
        if event[0] == "delta" and jobs.kinds("running").count("delta") == 2:
            for name, prompt in arrivals.items():
                engine.submit(jobs.make(name, [prompt], 5))

    engine.submit(jobs.make("running", ["rather"], 40, on_event=two_more_arrive))
    jobs.wait("running", *arrivals)

    long_first, short_first = jobs.first_delta("long prompt"), jobs.first_delta("short prompt")
    assert long_first < short_first, "the later, shorter request overtook the one before it"
    # Both joined the running batch (it ran 40 tokens, long past the long prompt's length) in one step.
    assert engine.batched == 2
    assert jobs.events[long_first + 1] == ("short prompt", jobs.events[short_first][1])
    for name, prompt in arrivals.items():
        assert jobs.text(name) == alone(loaded, prompt, 5), name


def test_a_job_that_fails_before_it_is_decoded_fails_alone_and_the_engine_keeps_serving(loaded):
    # A seed torch's generator cannot take (the server's protocol refuses it with a 400 first) raised while
    # the batch was put together, outside any handler: the model's thread ended and every request waited.
    engine = Engine(loaded, WINDOW, torch.device("cpu")).start()
    jobs = Jobs(loaded.tokenizer)
    release = hold_the_model(engine, jobs)
    engine.submit(jobs.make("bad seed", ["I HAD"], 5, temperature=0.9, seed=2**70))
    engine.submit(jobs.make("neighbour", ["Gisburn"], 5))
    release.set()
    jobs.wait("gate", "bad seed", "neighbour")
    assert jobs.kinds("bad seed") == ["error"]
    assert jobs.text("neighbour") == alone(loaded, "Gisburn", 5)

    def a_bad_one_joins(event: tuple) -> None:  # ... and the same for a job joining a running batch
        if event[0] == "delta" and jobs.kinds("running").count("delta") == 2:
            engine.submit(jobs.make("bad joiner", ["I"], 5, temperature=0.9, seed=-(2**70)))
            engine.submit(jobs.make("good joiner", ["I"], 5))

    engine.submit(jobs.make("running", ["rather"], 30, on_event=a_bad_one_joins))
    jobs.wait("running", "bad joiner", "good joiner")
    assert jobs.kinds("bad joiner") == ["error"]
    assert jobs.text("good joiner") == alone(loaded, "I", 5)
    assert jobs.text("running") == alone(loaded, "rather", 30)
    assert all(calls == 1 for calls in jobs.done_calls.values()), jobs.done_calls  # every slot freed, once


def test_serve_py_decodes_on_the_main_thread_with_the_http_server_beside_it(loaded):
    """The model decoded on a thread of its own while the main thread, which had loaded it, kept its own
    OpenMP team: GNU OpenMP, with more threads than cores, then stops its workers spinning between operations,
    and a request took 0.96 s instead of generate.py's 0.75 (a 2-core Xeon; BENCHMARKS.md, Serving)."""
    import httpx
    import uvicorn

    from gptlab.serving.app import create_app
    from gptlab.serving.command import bind, run_beside_the_model
    from gptlab.serving.protocol import Limits

    assert threading.current_thread() is threading.main_thread()
    engine = Engine(loaded, WINDOW, torch.device("cpu"))
    app = create_app(engine, {"model": "tiny"}, Limits(WINDOW - 1, 32, 2), 4, 1 << 16, None)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    answers = []

    def client() -> None:
        try:
            for _ in range(600):
                if server.started:
                    break
                threading.Event().wait(0.05)
            answers.append(httpx.post(f"{url}/v1/completions", json={"prompt": "I HAD", "max_tokens": 8, "temperature": 0}, timeout=60))
        finally:
            server.should_exit = True

    threads_decoding: set[str] = set()
    hook = loaded.model.register_forward_pre_hook(lambda *_: threads_decoding.add(threading.current_thread().name))
    try:
        threading.Thread(target=client).start()
        run_beside_the_model(server, sock, engine)  # returns once the server has stopped
    finally:
        hook.remove()
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].json()["choices"][0]["text"] == alone(loaded, "I HAD", 8)
    assert threads_decoding == {threading.main_thread().name}


def test_logprobs_list_the_tokens_of_the_text_returned_and_the_end_of_text_token_that_ended_it():
    """lm-eval's local-completions reads the last entry as the generated token: a completion that ended on
    <|endoftext|> lists it (as vLLM does), and one cut by a stop string lists only the tokens of its text."""
    from gptlab.data.tokenizers import GPT2Tokenizer
    from gptlab.serving.engine import Completion

    tokenizer = GPT2Tokenizer()
    torch.manual_seed(0)
    model = tiny_gpt(vocab_size=tokenizer.vocab_size, context_length=WINDOW).eval()
    engine = Engine(LoadedModel(model=model, tokenizer=tokenizer, trained_window=WINDOW, source="a tiny GPT"), WINDOW, torch.device("cpu"))
    job = Jobs(tokenizer).make("scored", ["Every effort"], 5)
    job.logprobs = 1
    ended = Completion(0, ids=tokenizer.encode(" moves you"), text=" moves you", finish_reason="stop", ended_on_eos=True)
    assert engine._logprobs(job, ended)["tokens"] == [" moves", " you", "<|endoftext|>"]
    cut = Completion(0, ids=tokenizer.encode(" moves you to tears"), text=" moves y", finish_reason="stop")
    scored = engine._logprobs(job, cut)
    assert scored["tokens"] == [" moves", " you"] and scored["text_offset"] == [len("Every effort"), len("Every effort moves")]
    job.echo = True
    assert engine._logprobs(job, cut)["tokens"] == ["Every", " effort", " moves", " you"]


@pytest.mark.parametrize("settings", [{"temperature": 0.0}, {"temperature": 1.0, "seed": 7}], ids=["greedy", "sampled"])
def test_a_one_token_completion_with_logprobs_runs_the_prompt_through_the_model_once(loaded, settings):
    """lm-eval's loglikelihood requests (echo, max_tokens 1, logprobs) ran the prompt through the model twice:
    once to decode the token, once more to score the prompt and it. The token is now drawn from the scoring
    pass, as decoding draws it; the answer is the two passes' answer."""
    from gptlab.serving.logprobs import completion_logprobs

    prompt = "I HAD always thought Jack"
    calls = []
    hook = loaded.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        jobs = Jobs(loaded.tokenizer)
        engine = Engine(loaded, WINDOW, torch.device("cpu")).start()
        job = jobs.make("scored", [prompt], 1, **settings)
        job.logprobs, job.echo = 2, True
        engine.submit(job)
        jobs.wait("scored")
    finally:
        hook.remove()
    assert len(calls) == 1
    (_, index, text, finish_reason, logprobs), = [event for who, event in jobs.events if event[0] == "choice"]
    assert text == jobs.text("scored") == alone(loaded, prompt, 1, **settings) and finish_reason == "length"
    ids = loaded.tokenizer.encode(prompt)
    with torch.inference_mode():
        two_passes = completion_logprobs(
            loaded.model, loaded.tokenizer, ids, loaded.tokenizer.encode(text), echo=True, top=2, window=WINDOW,
            device=torch.device("cpu"), text_before=len(prompt),
        )
    assert logprobs["tokens"] == two_passes["tokens"] == [*prompt, text]
    assert logprobs["token_logprobs"][0] is None
    assert logprobs["token_logprobs"][1:] == pytest.approx(two_passes["token_logprobs"][1:], abs=1e-5)
    assert [list(top) for top in logprobs["top_logprobs"][1:]] == [list(top) for top in two_passes["top_logprobs"][1:]]
