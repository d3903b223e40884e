"""serving.batching without a server: requests decoded together, one joining between steps, one leaving,
each gets the tokens it gets alone through generate.py's decoder."""

from __future__ import annotations

import torch
from tiny_models import tiny_gpt

from gptlab.generation.decoding import generate
from gptlab.serving.batching import Member, decode_together


def alone(model, prompt: list[int], steps: int, temperature: float, seed: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    out = generate(model, torch.tensor([prompt]), steps, 32, temperature=temperature, top_k=10, generator=generator)
    return out[0, len(prompt) :].tolist()


def test_a_request_joining_a_running_batch_and_one_leaving_early_get_their_lone_tokens():
    torch.manual_seed(0)
    model = tiny_gpt(context_length=32).eval()
    prompts = {"first": [5, 6, 7, 8, 9, 10], "second": [11, 12], "joiner": [1, 2, 3]}
    steps = {"first": 8, "second": 3, "joiner": 6}
    settings = {"first": (0.0, 1), "second": (0.9, 2), "joiner": (1.2, 3)}
    got: dict[str, list[int]] = {name: [] for name in prompts}
    left: list[str] = []

    def member(name: str) -> Member:
        temperature, seed = settings[name]
        return Member(1, steps[name], temperature, 10 if temperature else None, None, torch.Generator().manual_seed(seed),
                      on_tokens=lambda ids: got[name].append(int(ids[0, 0])) or False)

    members = {name: member(name) for name in ("first", "second")}
    offered = []

    def admit(length: int, rows: int):
        if offered or len(got["first"]) < 2:
            return []
        offered.append(length)  # the batch's padded length when it joins: longer than the joiner's prompt
        members["joiner"] = member("joiner")
        return [([prompts["joiner"]], members["joiner"])]

    names = {id(m): n for n, m in members.items()}
    decode_together(model, [prompts["first"], prompts["second"]], [members["first"], members["second"]], eos_id=None,
                    vocab_size=50, pad_id=0, device=torch.device("cpu"),
                    on_leave=lambda m, error: left.append(names.get(id(m), "joiner")), admit=admit)
    assert offered and offered[0] > len(prompts["joiner"])
    assert left == ["second", "first", "joiner"]  # second after its 3 tokens; the others at the 8th step
    for name in prompts:
        temperature, seed = settings[name]
        assert got[name] == alone(model, prompts[name], steps[name], temperature, seed), name
