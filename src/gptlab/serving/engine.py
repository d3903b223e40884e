"""The model's own thread: requests wait in a queue and are generated one after another, each with generate.py's
decoder (KV cache, temperature, top-k, top-p, beams) and its seeding, so a request and generate.py with the
same settings give the same text. The ``n`` completions of a prompt are one batch, as generate.py's
``num_samples``.

Text is sent as it is produced: an event per new piece of a completion (held back while it could still
become a stop string, or ends inside a character), then each completion whole. A request whose client has
gone is cancelled at its next token.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from gptlab.generation.decoding import generate


@dataclass
class Completion:
    index: int  # OpenAI's choice index: prompt number x n + sample number
    ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters of text already sent
    finish_reason: str | None = None


@dataclass
class Job:
    prompt_ids: list[list[int]]
    prefixes: list[str]  # echoed before each prompt's completions ("" without echo)
    n: int
    max_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    num_beams: int
    seed: int | None
    stops: list[str]
    emit: Callable[[tuple], None]  # called from the model's thread, with ("delta", index, text), ...
    on_done: Callable[[], None]
    cancelled: threading.Event = field(default_factory=threading.Event)


class _Cancelled(Exception):
    pass


class _AllFinished(Exception):
    pass


class Engine:
    """Runs jobs one at a time on the model's own thread."""

    def __init__(self, loaded, context_length: int, device: torch.device):
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.context_length = context_length
        self.device = device
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.cancelled = 0  # jobs stopped because their client left (GET /health shows it)
        threading.Thread(target=self._serve_forever, name="gptlab-model", daemon=True).start()

    def submit(self, job: Job) -> None:
        self.jobs.put(job)

    def _serve_forever(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                if job.cancelled.is_set():
                    raise _Cancelled
                with torch.inference_mode():
                    self._run(job)
            except _Cancelled:
                self.cancelled += 1
            except Exception as err:  # the server keeps serving; the client gets a 500 in OpenAI's shape
                traceback.print_exc()
                job.emit(("error", f"generation failed: {type(err).__name__}"))
            finally:
                job.on_done()

    def _run(self, job: Job) -> None:
        generator = torch.Generator(device=self.device)
        if job.seed is None:
            generator.seed()
        else:
            generator.manual_seed(job.seed)
        completion_tokens = 0
        for number, (ids, prefix) in enumerate(zip(job.prompt_ids, job.prefixes, strict=True)):
            rows = [Completion(number * job.n + sample) for sample in range(job.n)]
            for row in rows:
                row.text = prefix
            self._complete(job, ids, rows, generator)
            for row in rows:
                job.emit(("choice", row.index, row.text, row.finish_reason))
                completion_tokens += len(row.ids)
        prompt_tokens = sum(len(ids) for ids in job.prompt_ids)
        job.emit(("usage", prompt_tokens, completion_tokens))

    def _complete(self, job: Job, prompt: list[int], rows: list[Completion], generator: torch.Generator) -> None:
        eos = self.tokenizer.eos_id
        prefix = len(rows[0].text)
        idx = torch.tensor([prompt] * job.n, dtype=torch.long, device=self.device)
        options = dict(
            context_length=self.context_length, temperature=job.temperature, top_k=job.top_k, eos_id=eos,
            generator=generator, top_p=job.top_p, vocab_size=self.tokenizer.vocab_size,
        )
        if job.num_beams > 1:
            best = generate(self.loaded.model, idx, job.max_tokens, num_beams=job.num_beams, **options)
            for row, new_ids in zip(rows, best[:, len(prompt) :].tolist(), strict=True):
                ended = eos is not None and eos in new_ids
                self._take(job, row, new_ids[: new_ids.index(eos)] if ended else new_ids, prefix)
                row.finish_reason = row.finish_reason or ("stop" if ended else "length")
                self._send(job, row, len(row.text))
            return

        def on_tokens(new_ids: torch.Tensor) -> None:
            if job.cancelled.is_set():
                raise _Cancelled
            for row, token in zip(rows, new_ids[:, 0].tolist(), strict=True):
                if row.finish_reason is None:
                    if token == eos:
                        row.finish_reason = "stop"
                    else:
                        self._take(job, row, [token], prefix)
            if all(row.finish_reason for row in rows):
                raise _AllFinished

        with contextlib.suppress(_AllFinished):
            generate(self.loaded.model, idx, job.max_tokens, on_tokens=on_tokens, **options)
        for row in rows:
            row.finish_reason = row.finish_reason or "length"
            self._send(job, row, len(row.text))  # what was held back for a stop string that never came

    def _take(self, job: Job, row: Completion, new_ids: list[int], prefix: int) -> None:
        """Append tokens to a completion, cut it at a stop string, send what can no longer change."""
        row.ids.extend(new_ids)
        text = row.text[:prefix] + self.tokenizer.decode(row.ids)
        hits = [pos for pos in (text.find(stop, prefix) for stop in job.stops) if pos >= 0]
        if hits:
            row.text, row.finish_reason = text[: min(hits)], "stop"
            self._send(job, row, len(row.text))
            return
        row.text = text
        if text.endswith("\ufffd"):
            return  # the last token ends inside a character: wait for the rest of it
        # A stop string may be forming at the end: hold back as many characters as it could still need.
        hold = max((len(stop) - 1 for stop in job.stops), default=0)
        self._send(job, row, len(text) - hold)

    @staticmethod
    def _send(job: Job, row: Completion, upto: int) -> None:
        if upto > row.sent:
            job.emit(("delta", row.index, row.text[row.sent : upto]))
            row.sent = upto
