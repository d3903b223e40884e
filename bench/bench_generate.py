"""Decoding speed on one set of weights: our GPT with its KV cache, without it, and transformers' generate.

    python bench/bench_generate.py                       # GPT-2 124M shape, random weights, 200 new tokens
    python bench/bench_generate.py --new-tokens 50 --prompt-len 64
    python bench/bench_generate.py --device cuda --batch 1 8     # on a GPU, one table per batch size

All three decode greedily from the same prompts with the same weights (a random transformers
GPT2LMHeadModel, imported into our GPT), so they should produce the same tokens; the script says whether
they do (on a GPU, kernels that differ between the cached and uncached paths may flip a near-tie).
float32, batch 1 unless --batch says otherwise, on the CPU unless --device does. Each method gets one short
warm-up run.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import transformers

from gptlab.generation.decoding import generate
from gptlab.hub.gpt2_import import gpt_from_hf_model


def timed(fn) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--prompt-len", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1], help="prompts decoded at once")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()

    torch.manual_seed(0)
    hf_model = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval().to(args.device)  # 124M shape
    ours, _ = gpt_from_hf_model(hf_model)
    ours = ours.to(args.device).eval()
    for batch in args.batch:
        bench_batch(ours, hf_model, batch, args)


def bench_batch(ours, hf_model, batch: int, args) -> None:
    prompt = torch.randint(0, 50256, (batch, args.prompt_len), device=args.device)
    ctx = ours.context_length

    def run_ours(use_cache: bool, n: int) -> torch.Tensor:
        return generate(ours, prompt, n, ctx, temperature=0, use_cache=use_cache)

    def run_hf(n: int) -> torch.Tensor:
        # min_new_tokens keeps a random model from stopping early at <|endoftext|>, like ours with no eos_id.
        return hf_model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=50256,
        )

    methods = {
        "ours, KV cache": lambda n: run_ours(True, n),
        "ours, no cache": lambda n: run_ours(False, n),
        "transformers generate": run_hf,
    }
    results = {}
    torch.manual_seed(batch)
    with torch.inference_mode():
        for name, fn in methods.items():
            fn(4)  # warm-up: first-call allocations and kernel selection
            out, seconds = timed(lambda fn=fn: fn(args.new_tokens))
            new = out.size(1) - args.prompt_len
            results[name] = (out, new, seconds)

    print(f"GPT-2 124M shape, random weights, float32, batch {batch}, prompt {args.prompt_len} tokens, greedy")
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"transformers {transformers.__version__}, device {args.device}"
    )
    print()
    print(f"| {'method':<22} | new tokens | seconds | tokens/s (all prompts) |")
    print(f"|{'-' * 24}|-----------:|--------:|---------:|")
    speed = {}
    for name, (_, new, seconds) in results.items():
        speed[name] = new / seconds
        print(f"| {name:<22} | {new:>10} | {seconds:>7.2f} | {batch * speed[name]:>8.1f} |")
    print()
    print(f"KV cache vs no cache:             {speed['ours, KV cache'] / speed['ours, no cache']:.2f}x")
    print(
        f"ours (KV cache) vs transformers:  {speed['ours, KV cache'] / speed['transformers generate']:.2f}x"
    )
    outputs = [out for out, _, _ in results.values()]
    same = all(torch.equal(outputs[0], other) for other in outputs[1:])
    print(f"identical tokens from all three:  {same}")


if __name__ == "__main__":
    main()
