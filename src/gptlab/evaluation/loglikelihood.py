"""Log-likelihood of a continuation given a context, as lm-evaluation-harness computes it (its
``loglikelihood`` requests): the pair is tokenised whole and the context alone, the continuation's tokens
are what the whole has past the context's; trailing spaces of the context move to the continuation; an
empty context starts from the end-of-text token; the left of a pair too long for the window is cut off."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gptlab.core.errors import DataError
from gptlab.models.language_model import language_model


@dataclass(frozen=True)
class Scored:
    loglikelihood: float  # summed over the continuation's tokens, in nats
    is_greedy: bool  # every continuation token is the model's most likely next token
    tokens: int


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    if not context:
        # The end-of-text token is the context (a task file's text never encodes to it: it is read as text).
        if tokenizer.eos_id is None:  # the first token would be "predicted" from nothing (it read a padding)
            raise DataError(
                f"the continuation {continuation!r} has an empty context, and this model's tokenizer has no "
                "end-of-text token to start from (a character model); give each item a context"
            )
        return [tokenizer.eos_id], tokenizer.encode_corpus(continuation)
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
    the window is cut off. The model's head runs only where a continuation is predicted. Pairs that share
    their context (a multiple-choice item's choices) are packed into one row where the model can
    (``supports_packing``): the context once, then each continuation, which sees the context and itself."""
    scorer = language_model(model)
    results: list[Scored | None] = [None] * len(pairs)
    packs, alone = pack_by_context(pairs, window) if scorer.supports_packing else ([], list(range(len(pairs))))
    _score_packed(scorer, pairs, packs, batch_size, device, results)
    _score_one_a_row(scorer, pairs, alone, window, batch_size, device, results)
    return results


def pack_by_context(pairs: list[tuple[list[int], list[int]]], window: int) -> tuple[list[list[int]], list[int]]:
    """(rows of pair indices that share a context, indices of the pairs scored one a row). A row holds at
    most a window of tokens, so attention takes no more memory than one a row (a context with many long
    continuations takes several rows); a pair cut for the window is scored alone, as is a context that
    only one pair has."""
    by_context: dict[tuple[int, ...], list[int]] = {}
    alone = []
    for i, (ctx, cont) in enumerate(pairs):
        if ctx and cont and len(ctx) + len(cont) <= window + 1:
            by_context.setdefault(tuple(ctx), []).append(i)
        else:
            alone.append(i)
    packs = []
    for ctx, members in by_context.items():
        if len(members) == 1:
            alone += members
            continue
        row, length = [], len(ctx)
        for i in members:
            extra = len(pairs[i][1]) - 1  # its last token is predicted, never read
            if row and length + extra > window:
                packs.append(row)
                row, length = [], len(ctx)
            row.append(i)
            length += extra
        packs.append(row)
    return packs, sorted(alone)


def _score_packed(scorer, pairs, packs: list[list[int]], batch_size: int, device, results: list) -> None:
    """Rows of [context][continuation 1 but its last token][continuation 2 ...]: each continuation's tokens
    sit at the positions they have after the context alone and look at the context and at themselves; its
    first token is predicted at the context's last position, shared by all."""
    rows_of_ids = []
    for members in packs:
        ctx = pairs[members[0]][0]
        ids, positions, segments, reads = list(ctx), list(range(len(ctx))), [0] * len(ctx), []
        for segment, i in enumerate(members, start=1):
            read = pairs[i][1][:-1]
            reads.append([len(ctx) - 1, *range(len(ids), len(ids) + len(read))])
            ids += read
            positions += range(len(ctx), len(ctx) + len(read))
            segments += [segment] * len(read)
        rows_of_ids.append((members, ids, positions, segments, reads))
    rows_of_ids.sort(key=lambda row: -len(row[1]))
    for first in range(0, len(rows_of_ids), batch_size):
        batch = rows_of_ids[first : first + batch_size]
        length = len(batch[0][1])
        idx = torch.zeros(len(batch), length, dtype=torch.long)
        positions = torch.zeros(len(batch), length, dtype=torch.long)
        segments = torch.full((len(batch), length), -1, dtype=torch.long)  # -1: padding, which looks at itself
        rows, columns, order = [], [], []
        for row, (members, ids, row_positions, row_segments, reads) in enumerate(batch):
            idx[row, : len(ids)] = torch.tensor(ids)
            positions[row, : len(ids)] = torch.tensor(row_positions)
            segments[row, : len(ids)] = torch.tensor(row_segments)
            for i, read in zip(members, reads, strict=True):
                rows += [row] * len(read)
                columns += read
                order.append(i)
        causal = torch.ones(length, length, dtype=torch.bool).tril()
        keys, queries = segments.unsqueeze(1), segments.unsqueeze(2)
        allowed = causal & ((keys == queries) | (keys == 0))  # (B, T, T): the context, and its own tokens
        logits = scorer.packed_logits_at(
            idx.to(device), positions.to(device), allowed.to(device), torch.tensor(rows, device=device),
            torch.tensor(columns, device=device),
        )
        for i, score in zip(order, _scores(logits, [pairs[i][1] for i in order]), strict=True):
            results[i] = score


def _score_one_a_row(scorer, pairs, indices: list[int], window: int, batch_size: int, device, results: list) -> None:
    inputs = {i: (pairs[i][0] + pairs[i][1])[-(window + 1) :][:-1] for i in indices}
    order = sorted(indices, key=lambda i: -len(inputs[i]))
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
