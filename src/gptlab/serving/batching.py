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

from gptlab.generation.decoding import filter_logits


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
    if member.temperature == 0:
        ids = logits.argmax(dim=-1, keepdim=True)
    else:
        probs = torch.softmax(filter_logits(logits, member.temperature, member.top_k, member.top_p), dim=-1)
        ids = torch.multinomial(probs, num_samples=1, generator=member.generator)
    if eos_id is not None:
        ids = ids.masked_fill(member.finished.unsqueeze(1), eos_id)
        member.finished |= ids.squeeze(1) == eos_id
    return ids


@torch.inference_mode()
def decode_together(
    model, prompts: list[list[int]], members: list[Member], eos_id: int | None, vocab_size: int,
    pad_id: int, device: torch.device, on_leave: Callable[[Member, BaseException | None], None],
) -> None:
    """Decode every member's rows (prompts holds one prompt per row, members in order) until each member is
    finished, has its max_tokens, or raises from on_tokens; ``on_leave(member, error)`` is told each time
    one leaves (error None: finished normally)."""
    longest = max(map(len, prompts))
    padding = torch.tensor([longest - len(p) for p in prompts], device=device)
    batch = torch.tensor([[pad_id] * (longest - len(p)) + p for p in prompts], device=device)
    cache = model.new_kv_cache(left_padding=padding)
    logits = model(batch, kv_cache=cache, last_only=True)[:, -1, :vocab_size].float()
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
        if not still:
            return
        if len(keep) < logits.size(0):
            cache.reorder(torch.tensor(keep, device=device))
        active = still
        logits = model(torch.cat(step_ids), kv_cache=cache, last_only=True)[:, -1, :vocab_size].float()
