"""Log-likelihood of a continuation given a context, as lm-evaluation-harness computes it (its
``loglikelihood`` requests): the pair is tokenised whole and the context alone, the continuation's tokens
are what the whole has past the context's; trailing spaces of the context move to the continuation; an
empty context starts from the end-of-text token; the left of a pair too long for the window is cut off."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Scored:
    loglikelihood: float  # summed over the continuation's tokens, in nats
    is_greedy: bool  # every continuation token is the model's most likely next token
    tokens: int


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode_corpus(context + continuation)
    context_ids = tokenizer.encode_corpus(context) if context else []
    continuation_ids = whole[len(context_ids) :]
    if not context_ids:
        context_ids = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    return context_ids, continuation_ids


@torch.no_grad()
def loglikelihoods(
    model, tokenizer, pairs: list[tuple[str, str]], window: int, batch_size: int = 8, device="cpu"
) -> list[Scored]:
    """Each (context, continuation) pair scored; batched longest first, padded on the right (a causal
    model's logits at a position do not see the padding after it)."""
    encoded = [encode_pair(tokenizer, c, x) for c, x in pairs]
    inputs = [(ctx + cont)[-(window + 1) :][:-1] for ctx, cont in encoded]
    order = sorted(range(len(pairs)), key=lambda i: -len(inputs[i]))
    results: list[Scored | None] = [None] * len(pairs)
    for first in range(0, len(order), batch_size):
        batch = order[first : first + batch_size]
        longest = len(inputs[batch[0]])
        padded = torch.zeros(len(batch), longest, dtype=torch.long)
        for row, i in enumerate(batch):
            padded[row, : len(inputs[i])] = torch.tensor(inputs[i])
        log_probs = F.log_softmax(model(padded.to(device)).float(), dim=-1).cpu()
        for row, i in enumerate(batch):
            continuation = torch.tensor(encoded[i][1])
            length = len(inputs[i])
            # The continuation's n tokens are predicted by the logits at the input's last n positions.
            predicted = log_probs[row, length - len(continuation) : length]
            picked = predicted.gather(1, continuation.unsqueeze(1)).squeeze(1)
            greedy = bool((predicted.argmax(dim=-1) == continuation).all())
            results[i] = Scored(float(picked.double().sum()), greedy, len(continuation))
    return results
