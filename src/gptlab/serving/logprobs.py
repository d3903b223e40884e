"""A completion's ``logprobs`` in OpenAI's shape: each token, its log-probability and the most likely tokens
at its position, and where its text begins.

They are scored after the completion is decoded, by one pass of the model over the prompt and the
completion (windows of the generation window where they are longer; a window of W tokens predicts W + 1),
as lm-evaluation-harness scores a continuation: log-probabilities of the model's own distribution, before temperature, top-k or top-p shape
it for sampling (vLLM's default too). A completion of one token (lm-eval's loglikelihood requests: echo,
max_tokens 1) is drawn from the scoring pass's own last position instead (serving.engine): one pass, not two. With ``echo`` the prompt's tokens come first, the very first with no
log-probability (nothing predicts it). A completion that ended on the end-of-text token lists that token
last, as vLLM does: a client that reads the last entry as the generated token finds it there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gptlab.evaluation.perplexity import sliding_windows


@torch.no_grad()
def score_tokens(
    model, ids: list[int], first: int, window: int, top: int, device, known: torch.Tensor | None = None
) -> tuple[list[float], list[list[tuple[int, float]]]]:
    """For each position i in [first, len(ids)) with i > 0: log P(ids[i] | what precedes it in its window)
    and the ``top`` most likely ids there with their log-probabilities. A forward pass reads up to ``window``
    tokens and predicts the token after each, so ``window + 1`` tokens are scored whole; longer ones in
    windows every half window, each token scored once with as much left context as its window gives.
    ``known``: the model's logits (T, V) over ``ids[:T]`` already computed, used for a window of those
    very tokens instead of a second pass."""
    chosen: list[float] = []
    likeliest: list[list[tuple[int, float]]] = []
    for w in sliding_windows(len(ids), window + 1, max(window // 2, 1)):  # w: the input and the token after it
        begin = max(w.first_scored, first, 1)
        if begin >= w.end:
            continue
        if known is not None and w.begin == 0 and w.end - 1 == len(known):
            logits = known
        else:
            logits = model(torch.tensor([ids[w.begin : w.end - 1]], device=device))[0]
        # Input position p predicts token p + 1: the rows of the tokens [begin, end).
        logprobs = F.log_softmax(logits[begin - 1 - w.begin :].float(), dim=-1)
        targets = torch.tensor(ids[begin : w.end], device=logprobs.device)
        chosen.extend(logprobs.gather(1, targets[:, None])[:, 0].tolist())
        if top:
            values, indices = logprobs.topk(top, dim=-1)
            likeliest.extend(list(zip(row_ids, row_values, strict=True)) for row_ids, row_values in zip(indices.tolist(), values.tolist(), strict=True))
        else:
            likeliest.extend([] for _ in range(w.end - begin))
    return chosen, likeliest


def completion_logprobs(
    model, tokenizer, prompt: list[int], generated: list[int], *, echo: bool, top: int, window: int, device,
    text_before: int, prompt_logits: torch.Tensor | None = None,
) -> dict:
    """OpenAI's ``logprobs`` object of one completion: ``tokens``, ``token_logprobs``, ``top_logprobs`` (the
    ``top`` most likely tokens and the chosen one), ``text_offset`` (characters into the prompt and
    completion, ``text_before`` being the prompt's text). ``prompt_logits``: the model's logits over the
    whole prompt, where the completion's token was drawn from them (see score_tokens' ``known``)."""
    ids = prompt + generated
    first = 0 if echo else len(prompt)
    chosen, likeliest = score_tokens(model, ids, first, window, top, device, known=prompt_logits)
    if first == 0:  # the first token of the prompt: nothing predicts it
        chosen, likeliest = [None, *chosen], [None, *likeliest]

    texts = [tokenizer.decode([token]) for token in ids[first:]]
    offsets, position = [], 0 if echo else text_before
    for text in texts:
        offsets.append(position)
        position += len(text)
    top_logprobs = []
    for text, logprob, options in zip(texts, chosen, likeliest, strict=True):
        if options is None:
            top_logprobs.append(None)
            continue
        entry = {tokenizer.decode([option]): value for option, value in options}
        entry.setdefault(text, logprob)  # the chosen token always appears (up to top + 1 entries)
        top_logprobs.append(entry)
    return {
        "tokens": texts,
        "token_logprobs": chosen,
        "top_logprobs": top_logprobs,
        "text_offset": offsets,
    }
