"""Log-likelihood of a continuation given a context, as lm-evaluation-harness computes it (its
``loglikelihood`` requests): the pair is tokenised whole and the context alone, the continuation's tokens
are what the whole has past the context's; trailing spaces of the context move to the continuation; an
empty context starts from the end-of-text token; the left of a pair too long for the window is cut off."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gptlab.models.language_model import language_model


@dataclass(frozen=True)
class Scored:
    loglikelihood: float  # summed over the continuation's tokens, in nats
    is_greedy: bool  # every continuation token is the model's most likely next token
    tokens: int


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    if not context:
        # The end-of-text token is the context (a task file's text never encodes to it: it is read as text).
        return ([tokenizer.eos_id] if tokenizer.eos_id is not None else []), tokenizer.encode_corpus(continuation)
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer.encode_corpus(context + continuation)
    context_ids = tokenizer.encode_corpus(context)
    return context_ids, whole[len(context_ids) :]


def loglikelihoods(
    model, tokenizer, pairs: list[tuple[str, str]], window: int, batch_size: int = 8, device="cpu"
) -> list[Scored]:
    """Each (context, continuation) pair of texts scored."""
    encoded = [encode_pair(tokenizer, c, x) for c, x in pairs]
    return score_token_pairs(model, encoded, window, batch_size, device)


@torch.no_grad()
def score_token_pairs(
    model, pairs: list[tuple[list[int], list[int]]], window: int, batch_size: int = 8, device="cpu"
) -> list[Scored]:
    """Each (context ids, continuation ids) pair scored; batched longest first, padded on the right (a
    causal model's logits at a position do not see the padding after it); the left of a pair too long for
    the window is cut off. The model's head runs only where a continuation is predicted."""
    scorer = language_model(model)
    inputs = [(ctx + cont)[-(window + 1) :][:-1] for ctx, cont in pairs]
    order = sorted(range(len(pairs)), key=lambda i: -len(inputs[i]))
    results: list[Scored | None] = [None] * len(pairs)
    for first in range(0, len(order), batch_size):
        batch = order[first : first + batch_size]
        padded = torch.zeros(len(batch), len(inputs[batch[0]]), dtype=torch.long)
        rows, positions = [], []
        for row, i in enumerate(batch):
            padded[row, : len(inputs[i])] = torch.tensor(inputs[i])
            # The continuation's n tokens are predicted by the logits at the input's last n positions.
            length, n = len(inputs[i]), len(pairs[i][1])
            rows += [row] * n
            positions += range(length - n, length)
        logits = scorer.logits_at(padded.to(device), torch.tensor(rows, device=device), torch.tensor(positions, device=device))
        for i, score in zip(batch, _scores(logits, [pairs[i][1] for i in batch]), strict=True):
            results[i] = score
    return results


def _scores(logits: torch.Tensor, continuations: list[list[int]]) -> list[Scored]:
    """Each continuation's summed log-likelihood and greedy flag from the logits (N, vocab) that predict its
    tokens, all continuations' rows one after another."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    targets = torch.tensor([token for continuation in continuations for token in continuation], device=log_probs.device)
    picked = log_probs.gather(1, targets.unsqueeze(1)).squeeze(1).double().cpu()
    hits = (log_probs.argmax(dim=-1) == targets).cpu()
    scores, start = [], 0
    for continuation in continuations:
        end = start + len(continuation)
        scores.append(Scored(float(picked[start:end].sum()), bool(hits[start:end].all()), len(continuation)))
        start = end
    return scores
