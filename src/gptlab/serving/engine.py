"""The model's loop: requests wait in a queue and are decoded in batches (serving.batching): requests
waiting together start one, and later ones join it between steps. serve.py runs it on the main thread and
the HTTP server on a thread of its own, so that every PyTorch CPU operation starts on one thread (see
:meth:`Engine.serve_forever`). Each keeps its own settings and seed and
draws as generate.py's sampling loop draws, so a request alone gives exactly generate.py's text (the same
operations) and in company the same text up to float noise. Requests a batch cannot take (several prompts,
beams, a text past the window) run alone through generate.py's decoder itself. The ``n`` completions of a
prompt are rows of one batch, as generate.py's ``num_samples``.

Text is sent as it is produced: an event per new piece of a completion (held back while it could still
become a stop string, or ends inside a character), then each completion whole. A request whose client has
gone is cancelled at its next token.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from gptlab.generation.decoding import draw_next, generate
from gptlab.serving.batching import Member, decode_together
from gptlab.serving.logprobs import completion_logprobs


@dataclass
class Completion:
    index: int  # OpenAI's choice index: prompt number x n + sample number
    ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0  # characters of text already sent
    finish_reason: str | None = None
    ended_on_eos: bool = False  # finished by the end-of-text token (listed last in its logprobs)
    prompt_logits: torch.Tensor | None = None  # the scoring pass its one token was drawn from (logprobs reuse it)


@dataclass
class Job:
    prompt_ids: list[list[int]]
    prefixes: list[str]  # echoed before each prompt's completions ("" without echo)
    n: int
    max_tokens: int
    temperature: float | None  # None: beam search, which does not sample
    top_k: int | None
    top_p: float | None
    num_beams: int
    seed: int | None
    stops: list[str]
    emit: Callable[[tuple], None]  # called from the model's thread, with ("delta", index, text), ...
    on_done: Callable[[], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    logprobs: int | None = None  # None: none; k: each token's log-probability and the k likeliest (serving.logprobs)
    echo: bool = False  # with logprobs: the prompt's tokens scored too


class _Cancelled(Exception):
    pass


class _AllFinished(Exception):
    pass


class Engine:
    """Runs jobs on the model's thread (the one in :meth:`serve_forever`): a job alone as generate.py would,
    jobs waiting together in one batch (serving.batching) where they can be."""

    def __init__(self, loaded, context_length: int, device: torch.device, max_batch_rows: int = 16):
        self.loaded = loaded
        self.tokenizer = loaded.tokenizer
        self.context_length = context_length
        self.device = device
        self.max_batch_rows = max_batch_rows
        self.jobs: queue.Queue[Job | None] = queue.Queue()  # None: wakes the loop to stop
        self.held: collections.deque[Job] = collections.deque()  # taken from the queue, not batchable now
        self.cancelled = 0  # jobs stopped because their client left (GET /health shows it)
        self.batched = 0  # requests decoded in one batch with others (GET /health shows it)
        self._stopping = threading.Event()

    def submit(self, job: Job) -> None:
        self.jobs.put(job)

    def start(self) -> Engine:
        """Serve on a thread of its own, for a program whose main thread has other work."""
        threading.Thread(target=self.serve_forever, name="gptlab-model", daemon=True).start()
        return self

    def stop(self) -> None:
        """End :meth:`serve_forever` once the work in hand is done."""
        self._stopping.set()
        self.jobs.put(None)

    def serve_forever(self) -> None:
        """Decode the jobs submitted, on the calling thread, until :meth:`stop`.

        Every PyTorch CPU operation should start on this one thread: a thread that runs a parallel
        operation gets an OpenMP thread team of its own, and with the teams of two threads alive (the one that
        loaded the model, the one that decodes) GNU OpenMP has more threads than cores and stops its workers
        spinning between operations, the short waits a decoding step is made of: a request decoded off the
        main thread took 0.96 s instead of generate.py's 0.75 on a 2-core Xeon (BENCHMARKS.md, Serving)."""
        while not self._stopping.is_set():
            batch = self._next_batch()
            if not batch:
                continue
            if self._batchable(batch[0]):
                self._run_together(batch)  # alone at first, maybe: later requests may join it
            else:
                self._run_alone(batch[0])

    def _next_batch(self) -> list[Job]:
        """The next job, with the jobs waiting behind it that can be decoded with it."""
        first = self.held.popleft() if self.held else self.jobs.get()
        if first is None:
            return []  # stop() woke the loop
        batch = [first]
        if not self._batchable(first):
            return batch
        rows, longest, reach = first.n, len(first.prompt_ids[0]), first.max_tokens
        while rows < self.max_batch_rows:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                continue  # stop(): the loop ends after this batch
            # The padded batch must fit the window: the longest prompt plus the most new tokens.
            if self._batchable(job) and self._fits(job, rows, max(longest, len(job.prompt_ids[0])), reach):
                batch.append(job)
                rows, longest, reach = rows + job.n, max(longest, len(job.prompt_ids[0])), max(reach, job.max_tokens)
            else:
                self.held.append(job)
        return batch

    def _fits(self, job: Job, rows: int, length: int, reach: int = 0) -> bool:
        """Whether ``job`` can join a batch of ``rows`` rows padded to ``length`` tokens whose members may
        still add ``reach`` tokens."""
        return rows + job.n <= self.max_batch_rows and length + max(reach, job.max_tokens) <= self.context_length

    def _batchable(self, job: Job) -> bool:
        # One prompt (several share one generator, in turn), no beams, no sliding window, a cache to pad.
        return (
            len(job.prompt_ids) == 1 and job.num_beams == 1 and not job.cancelled.is_set() and job.max_tokens > 0
            and len(job.prompt_ids[0]) + job.max_tokens <= self.context_length
            and getattr(self.loaded.model, "supports_kv_cache", False)
            and not self._drawn_in_the_scoring_pass(job, job.prompt_ids[0])
        )

    def _drawn_in_the_scoring_pass(self, job: Job, prompt: list[int]) -> bool:
        """A completion of one token whose logprobs are asked (lm-eval's loglikelihood requests: echo,
        max_tokens 1): the pass that scores the prompt ends with the next token's distribution, so the token
        is drawn from it and the prompt runs through the model once, not once to decode and again to score.
        Only where the whole prompt is in the window, as decoding would see it."""
        return job.max_tokens == 1 and job.logprobs is not None and job.num_beams == 1 and len(prompt) <= self.context_length

    def _run_alone(self, job: Job) -> None:
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

    def _run_together(self, jobs: list[Job]) -> None:
        """Decode ``jobs`` as one batch; jobs that arrive meanwhile and fit join it between steps."""
        in_batch: list[Job] = []
        completions: dict[int, list[Completion]] = {}
        job_of: dict[int, Job] = {}
        left: set[int] = set()

        def member_for(job: Job) -> Member | None:
            """The job's member of the batch; None for a job that fails before it starts (its generator: a
            seed torch cannot take), which hears so alone, without stopping the batch or the model's thread."""
            try:
                generator = self._generator(job)
            except Exception as err:
                traceback.print_exc()
                job.emit(("error", f"generation failed: {type(err).__name__}"))
                job.on_done()
                return None
            rows = completions[id(job)] = self._new_rows(job, 0)
            member = Member(
                job.n, job.max_tokens, job.temperature, job.top_k, job.top_p, generator,
                on_tokens=lambda ids: self._take_step(job, rows, ids[:, 0].tolist()),
            )
            job_of[id(member)] = job
            in_batch.append(job)
            return member

        def on_leave(member: Member, error: BaseException | None) -> None:
            job = job_of[id(member)]
            left.add(id(job))
            try:
                if isinstance(error, _Cancelled):
                    self.cancelled += 1
                elif error is not None:
                    traceback.print_exception(error)
                    job.emit(("error", f"generation failed: {type(error).__name__}"))
                else:
                    self._finish(job, completions[id(job)])
            finally:
                job.on_done()

        def admit(length: int, rows: int) -> list[tuple[list[list[int]], Member]]:
            joining = []
            while rows < self.max_batch_rows:
                # First come, first joined: a request that did not fit blocks the others from joining, so the
                # batch drains and the next one starts with it (else later joiners could keep it waiting).
                if not self.held:
                    try:
                        job = self.jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        continue  # stop(): the loop ends after this batch
                    self.held.append(job)
                job = self.held[0]
                prompt = job.prompt_ids[0]
                if not (self._batchable(job) and len(prompt) <= length and self._fits(job, rows, length)):
                    break
                self.held.popleft()
                member = member_for(job)
                if member is not None:
                    joining.append(([prompt] * job.n, member))
                    rows += job.n
            if joining:
                self.batched += len(joining)
            return joining

        members = {id(job): member for job in jobs if (member := member_for(job)) is not None}
        jobs = [job for job in jobs if id(job) in members]
        if not jobs:
            return
        if len(jobs) > 1:
            self.batched += len(jobs)
        try:
            decode_together(
                self.loaded.model, [job.prompt_ids[0] for job in jobs for _ in range(job.n)], list(members.values()),
                self.tokenizer.eos_id, self.tokenizer.vocab_size, pad_id=0, device=self.device,
                on_leave=on_leave, admit=admit,
            )
        except Exception as err:  # the batch itself failed: every job still in it hears so
            traceback.print_exc()
            for job in in_batch:
                if id(job) not in left:
                    job.emit(("error", f"generation failed: {type(err).__name__}"))
                    job.on_done()

    def _generator(self, job: Job) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        if job.seed is None:
            generator.seed()
        else:
            generator.manual_seed(job.seed)
        return generator

    def _new_rows(self, job: Job, number: int) -> list[Completion]:
        rows = [Completion(number * job.n + sample) for sample in range(job.n)]
        for row in rows:
            row.text = job.prefixes[number]
        return rows

    def _finish(self, job: Job, rows: list[Completion]) -> None:
        """The completions whole, and the usage: the end of a one-prompt job."""
        for row in rows:
            self._close(job, row)
            job.emit(("choice", row.index, row.text, row.finish_reason, self._logprobs(job, row)))
        job.emit(("usage", len(job.prompt_ids[0]), sum(len(row.ids) for row in rows)))

    def _run(self, job: Job) -> None:
        generator = self._generator(job)
        completion_tokens = 0
        for number, ids in enumerate(job.prompt_ids):
            rows = self._new_rows(job, number)
            self._complete(job, ids, rows, generator)
            for row in rows:
                job.emit(("choice", row.index, row.text, row.finish_reason, self._logprobs(job, row)))
                completion_tokens += len(row.ids)
        prompt_tokens = sum(len(ids) for ids in job.prompt_ids)
        job.emit(("usage", prompt_tokens, completion_tokens))

    def _complete(self, job: Job, prompt: list[int], rows: list[Completion], generator: torch.Generator) -> None:
        if job.max_tokens == 0:  # echo alone: the prompt is the whole answer (scored by _logprobs if asked)
            for row in rows:
                self._close(job, row)
            return
        if self._drawn_in_the_scoring_pass(job, prompt):
            self._draw_from_the_scoring_pass(job, prompt, rows, generator)
            return
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
                row.ended_on_eos = ended and row.finish_reason is None  # not cut by a stop string first
                row.finish_reason = row.finish_reason or ("stop" if ended else None)
                self._close(job, row)
            return

        def on_tokens(new_ids: torch.Tensor) -> None:
            if self._take_step(job, rows, new_ids[:, 0].tolist()):
                raise _AllFinished

        with contextlib.suppress(_AllFinished):
            generate(self.loaded.model, idx, job.max_tokens, on_tokens=on_tokens, **options)
        for row in rows:
            self._close(job, row)

    def _draw_from_the_scoring_pass(self, job: Job, prompt: list[int], rows: list[Completion], generator) -> None:
        """Each row's one token, drawn as generate.py draws it (the same rule, the generator in turn) from
        the last position of one pass over the prompt; the logits stay with the rows for their logprobs.
        The pass reads the whole prompt where decoding reads it through its KV cache: the same distribution
        up to the last bits of float sums."""
        logits = self.loaded.model(torch.tensor([prompt], device=self.device))[0]
        last = logits[-1:, : self.tokenizer.vocab_size].float().expand(job.n, -1)
        temperature = 1.0 if job.temperature is None else job.temperature
        tokens = draw_next(last, temperature, job.top_k, job.top_p, generator)[:, 0].tolist()
        for row in rows:
            row.prompt_logits = logits
        self._take_step(job, rows, tokens)
        for row in rows:
            self._close(job, row)

    def _close(self, job: Job, row: Completion) -> None:
        """A completion ends: unfinished means cut by max_tokens; send what was held back for a stop string
        that never came."""
        row.finish_reason = row.finish_reason or "length"
        self._send(job, row, len(row.text))

    def _take_step(self, job: Job, rows: list[Completion], tokens: list[int]) -> bool:
        """One step's new token of each row; True once every row is finished. A cancelled job raises."""
        if job.cancelled.is_set():
            raise _Cancelled
        prefix = len(job.prefixes[rows[0].index // job.n])
        for row, token in zip(rows, tokens, strict=True):
            if row.finish_reason is None:
                if token == self.tokenizer.eos_id:
                    row.finish_reason, row.ended_on_eos = "stop", True
                else:
                    self._take(job, row, [token], prefix)
        return all(row.finish_reason for row in rows)

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

    def _logprobs(self, job: Job, row: Completion) -> dict | None:
        """The completion's logprobs (None unless asked): its tokens as far as its text goes (a stop string cuts
        them too), scored with the prompt's after decoding."""
        if job.logprobs is None:
            return None
        number = row.index // job.n
        prefix = job.prefixes[number]
        generated, completion = list(row.ids), row.text[len(prefix) :]
        if len(self.tokenizer.decode(generated)) > len(completion):  # cut by a stop string
            kept, length = [], 0
            for token in generated:
                if length >= len(completion):
                    break
                kept.append(token)
                length += len(self.tokenizer.decode([token]))
            generated = kept
        elif row.ended_on_eos:
            generated.append(self.tokenizer.eos_id)
        prompt = job.prompt_ids[number]
        return completion_logprobs(
            self.loaded.model, self.tokenizer, prompt, generated, echo=job.echo, top=job.logprobs,
            window=self.context_length, device=self.device, text_before=len(self.tokenizer.decode(prompt)),
            prompt_logits=row.prompt_logits,
        )

    @staticmethod
    def _send(job: Job, row: Completion, upto: int) -> None:
        if upto > row.sent:
            job.emit(("delta", row.index, row.text[row.sent : upto]))
            row.sent = upto
