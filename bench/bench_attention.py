"""Causal attention, forward and backward, in bfloat16 against the same inputs cast to float32, on the CPU:
the measurement behind `gptlab.models.gpt.float32_attention_is_faster` (torch 2.13's CPU flash-attention
backward in bfloat16 is slow for short rows).

    python bench/bench_attention.py            # head dims 32, 64, 128 x rows of 64 to 1024 tokens

Each cell times one training-shaped call (a 384-wide model's heads: 12, 6 or 3 of 32, 64 or 128 dimensions;
batch x tokens = 8,192) both ways in the same run, medians of ``--repeats`` calls after a warm-up, and says
which is faster and what the model's rule picks.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from gptlab.models.gpt import float32_attention_is_faster


def median_ms(step, repeats: int) -> float:
    step()  # warm-up: kernel selection and first-touch of the buffers
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def in_bf16(q, k, v) -> None:
    F.scaled_dot_product_attention(q, k, v, is_causal=True).float().sum().backward()


def in_float32(q, k, v) -> None:
    """As the GPT trains short rows in bf16: attention in float32, its output back in bfloat16."""
    out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
    out.to(torch.bfloat16).float().sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head-dims", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--tokens", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| head dim | tokens | bf16 | in float32 | faster | the model's rule |")
    print("|---:|---:|---:|---:|---|---|")
    for head_dim in args.head_dims:
        for tokens in args.tokens:
            batch, heads = max(1, 8192 // tokens), 384 // head_dim
            q, k, v = (torch.randn(batch, heads, tokens, head_dim, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))

            bf16 = median_ms(lambda q=q, k=k, v=v: in_bf16(q, k, v), args.repeats)
            fp32 = median_ms(lambda q=q, k=k, v=v: in_float32(q, k, v), args.repeats)
            rule = "float32" if float32_attention_is_faster(q) else "bf16"
            print(f"| {head_dim} | {tokens} | {bf16:.1f} ms | {fp32:.1f} ms | {'float32' if fp32 < bf16 else 'bf16'} "
                  f"({max(bf16, fp32) / min(bf16, fp32):.2f}x) | {rule} |", flush=True)


if __name__ == "__main__":
    main()
