"""Requests that wait together are decoded together: their prompts, left-padded to one length, share one
forward pass a step (the KV cache knows each row's padding: positions count from a row's first real token and
no query looks at padding). Each request keeps its own settings and its own seeded generator, drawing for its
own rows exactly as generate.py's sampling loop does, so a request's tokens do not depend on its neighbours
(up to the last bits of float32 sums, which differ between batch shapes). A request that is finished, or whose
client has left, leaves the batch at once; the others go on.

On a CPU a decoding step of one sequence costs nearly as much as a step of sixteen (the weights are read from
memory once either way): batching is what turns concurrent clients into throughput.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from gptlab.generation.decoding import draw_next


@dataclass
class Member:
    """One request in a batch: its rows, generator and what to call with each step's new ids."""

    rows: int
    max_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    generator: torch.Generator
    # Given the step's new ids (rows, 1): returns True once the request is finished; raises to leave.
    on_tokens: Callable[[torch.Tensor], bool]
    finished: torch.Tensor = field(init=False)
    steps: int = 0

    def __post_init__(self) -> None:
        self.finished = torch.zeros(self.rows, dtype=torch.bool)


def next_ids(member: Member, logits: torch.Tensor, eos_id: int | None) -> torch.Tensor:
    """The member's next ids from its rows' logits, as generate.py's sampling loop draws them."""
    ids = draw_next(logits, member.temperature, member.top_k, member.top_p, member.generator)
    if eos_id is not None:
        ids = ids.masked_fill(member.finished.unsqueeze(1), eos_id)
        member.finished |= ids.squeeze(1) == eos_id
    return ids


def _prefill(model, prompts: list[list[int]], length: int, pad_id: int, device: torch.device, vocab_size: int):
    """Prompts left-padded to ``length`` through the model into a new cache: (cache, last logits)."""
    padding = torch.tensor([length - len(p) for p in prompts], device=device)
    batch = torch.tensor([[pad_id] * (length - len(p)) + p for p in prompts], device=device)
    # No padding at all (a request alone, or prompts of one length): the model's plain causal path, the very
    # operations of generate.py.
    cache = model.new_kv_cache(left_padding=padding if bool(padding.any()) else None)
    return cache, model(batch, kv_cache=cache, last_only=True)[:, -1, :vocab_size].float()


@torch.inference_mode()
def decode_together(
    model, prompts: list[list[int]], members: list[Member], eos_id: int | None, vocab_size: int,
    pad_id: int, device: torch.device, on_leave: Callable[[Member, BaseException | None], None],
    admit: Callable[[int, int], list[tuple[list[list[int]], Member]]] | None = None,
) -> None:
    """Decode every member's rows (prompts holds one prompt per row, members in order) until each member is
    finished, has its max_tokens, or raises from on_tokens; ``on_leave(member, error)`` is told each time
    one leaves (error None: finished normally). Between steps, ``admit(length, rows)`` may hand over new members
    (with their rows' prompts, none longer than ``length``, the batch's padded length): they join the batch
    (continuous batching), their prompts left-padded to that length."""
    cache, logits = _prefill(model, prompts, max(map(len, prompts)), pad_id, device, vocab_size)
    active = list(members)
    while active:
        step_ids, keep, still = [], [], []
        first = 0
        for member in active:
            rows = slice(first, first + member.rows)
            ids = next_ids(member, logits[rows], eos_id)
            member.steps += 1
            try:
                done = member.on_tokens(ids) or member.steps >= member.max_tokens or bool(member.finished.all())
            except Exception as err:  # the member's client left, or its callback failed: it alone leaves
                on_leave(member, err)
            else:
                if done:
                    on_leave(member, None)
                else:
                    step_ids.append(ids)
                    keep.extend(range(rows.start, rows.stop))
                    still.append(member)
            first = rows.stop
        if len(keep) < logits.size(0):
            if not keep:
                cache = None
            else:
                cache.reorder(torch.tensor(keep, device=device))
        active = still
        logits = model(torch.cat(step_ids), kv_cache=cache, last_only=True)[:, -1, :vocab_size].float() if still else None
        joining = admit(cache.length, len(keep)) if admit is not None and still else []
        if joining:
            new_cache, new_logits = _prefill(model, [p for prompts_of, _ in joining for p in prompts_of], cache.length, pad_id, device, vocab_size)
            cache.append_rows(new_cache)
            logits = torch.cat([logits, new_logits])
            active += [member for _, member in joining]
