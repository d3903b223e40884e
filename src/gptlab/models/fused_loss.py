"""Cross-entropy of the output head, chunk by chunk: the fast path of the GPT's loss.

The plain way, ``F.cross_entropy(head(x), y)``, materialises (tokens x vocab) logits, then under autocast an
fp32 copy of them, then fp32 log-probabilities, and in backward an fp32 gradient of each: for GPT-2 at
batch 8 x 256 tokens that is four 400 MB tensors, about a third of a CPU training step spent on memory
traffic and page faults rather than arithmetic.

Here the head's matmul runs over chunks of rows. Each chunk's logits are turned straight into its loss and
its gradient (softmax minus one-hot, the whole of the cross-entropy backward), kept in the compute dtype;
backward is then two matmuls. The one (tokens x vocabulary) tensor it keeps is that gradient, in the
compute dtype (during training; evaluation keeps none), in place of the four above. Numerically it is the same computation as the plain path under autocast:
logits rounded to the compute dtype, softmax in fp32, the logit gradient rounded back for the matmuls.
"""

from __future__ import annotations

import torch

# Rows of logits handled at once: 2**23 fp32 values (32 MB) per chunk stays below glibc's largest mmap
# threshold, so the chunk buffers come from the reused heap instead of fresh, page-faulting mappings.
_CHUNK_ELEMENTS = 2**23
IGNORE_INDEX = -100


def linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int | None = None
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets``, ignoring ``IGNORE_INDEX`` targets.

    ``hidden`` is (N, d), ``weight`` (V_padded, d), ``targets`` (N,). Only the first ``vocab_size`` rows of
    ``weight`` are real tokens: the padded rows get no probability (their logits are -inf), so they are
    never predicted and receive no gradient. Runs in the autocast dtype when autocast is on.
    """
    device_type = hidden.device.type
    compute_dtype = (
        torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype
    )
    need_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    vocab_size = weight.size(0) if vocab_size is None else vocab_size
    return _LinearCrossEntropy.apply(hidden, weight, targets, vocab_size, compute_dtype, need_grad)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, vocab_size, compute_dtype, need_grad):
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(compute_dtype), weight.to(compute_dtype)
            rows, padded_vocab = h.size(0), w.size(0)
            valid = targets != IGNORE_INDEX
            all_valid = bool(valid.all())
            safe_targets = targets.masked_fill(~valid, 0).unsqueeze(1)
            n_valid = valid.sum()
            total = torch.zeros((), dtype=torch.float32, device=h.device)
            grad_logits = h.new_empty(rows, padded_vocab) if need_grad else None
            chunk = max(1, _CHUNK_ELEMENTS // padded_vocab)
            for start in range(0, rows, chunk):
                end = min(start + chunk, rows)
                logits = (h[start:end] @ w.t()).float()
                if padded_vocab > vocab_size:
                    logits[:, vocab_size:] = float("-inf")
                log_probs = torch.log_softmax(logits, dim=1, out=logits)  # in place: one fp32 buffer per chunk
                token_losses = -log_probs.gather(1, safe_targets[start:end]).squeeze(1)
                if not all_valid:
                    token_losses = token_losses * valid[start:end]
                total += token_losses.sum()
                if need_grad:
                    # d(loss_sum)/d(logits) = softmax - one_hot(target), zero for ignored rows.
                    probs = log_probs.exp_()
                    minus_one = torch.full_like(token_losses, -1.0).unsqueeze(1)
                    probs.scatter_add_(1, safe_targets[start:end], minus_one)
                    if not all_valid:
                        probs.mul_(valid[start:end].unsqueeze(1))
                    grad_logits[start:end] = probs
        ctx.n_valid = n_valid
        ctx.input_dtypes = (hidden.dtype, weight.dtype)
        if need_grad:
            ctx.save_for_backward(grad_logits, h, w)
        return total / n_valid

    @staticmethod
    def backward(ctx, grad_output):
        grad_logits, h, w = ctx.saved_tensors
        # The mean's 1/N is applied after the matmuls, on the small results (no extra pass over the logits).
        scale = grad_output / ctx.n_valid
        grad_hidden = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_hidden = (grad_logits @ w).to(ctx.input_dtypes[0]).mul_(scale)
        if ctx.needs_input_grad[1]:
            grad_weight = (grad_logits.t() @ h).to(ctx.input_dtypes[1]).mul_(scale)
        return grad_hidden, grad_weight, None, None, None, None
