"""Serving speed: serve.py under 1, 4 and 16 concurrent clients, against the same requests run one after
another through generate.py's code in process.

    python bench/bench_serve.py                         # GPT-2 124M shape, random weights, 32 new tokens
    python bench/bench_serve.py --clients 1 4 16 --requests 32 --max-tokens 32

The server is the real one (serve.py in a subprocess on a free local port, weights saved by transformers in a
temporary folder); each client sends its share of the requests one after another over HTTP, greedy
(temperature 0), each prompt a line of Tiny Shakespeare. Printed per level: requests/s, p50 and p99 latency,
generated tokens/s, the ratio to the in-process baseline, and decoding MFU (2 x parameters FLOPs per
generated token, prompt reading not counted) against the fp32 matmul peak measured in the same run; and
whether every answer equals the baseline's text.

Then scoring, as lm-evaluation-harness's local-completions model asks it of a server for every loglikelihood
item: token-id prompts (``--scoring-tokens`` each, consecutive stretches of Tiny Shakespeare) with ``echo``,
``max_tokens`` 1 and ``logprobs`` 1, against the same tokens scored in process by one pass each (what lm-eval's
own model for gptlab and eval.py run). Printed: requests/s, tokens scored/s, the ratio, MFU (2 x parameters
FLOPs per prompt token) and the largest difference between the two log-probabilities of a token.

    python bench/bench_serve.py --tables scoring --scoring-requests 16 --scoring-tokens 512
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import torch
import transformers

from gptlab.checkpoints.loading import load_for_generation
from gptlab.data.corpora import read_corpus
from gptlab.generation.decoding import generate
from gptlab.models.flops import measure_peak_flops

REPO = Path(__file__).resolve().parents[1]


def start_server(folder: Path, log: Path, max_tokens: int) -> tuple[subprocess.Popen, str]:
    out = log.open("w")
    process = subprocess.Popen(
        [sys.executable, "serve.py", f"init_from={folder}", "port=0", "device=cpu", f"limits.max_tokens={max_tokens}",
         "limits.max_concurrent=64"],
        cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 300
    while not (match := re.search(r"on (http://\S+) ", log.read_text())):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"serve.py did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.2)
    return process, match.group(1)


def baseline(loaded, prompts: list[str], max_tokens: int) -> tuple[list[str], list[float], int, float]:
    """generate.py's code, in process, one request after another (what a server without batching does)."""
    texts, latencies, tokens = [], [], 0
    started = time.perf_counter()
    for prompt in prompts:
        begin = time.perf_counter()
        ids = loaded.tokenizer.encode(prompt)
        out = generate(loaded.model, torch.tensor([ids]), max_tokens, loaded.trained_window, temperature=0.0,
                       eos_id=loaded.tokenizer.eos_id, vocab_size=loaded.tokenizer.vocab_size)
        new = out[0, len(ids) :].tolist()
        eos = loaded.tokenizer.eos_id
        new = new[: new.index(eos)] if eos in new else new
        texts.append(loaded.tokenizer.decode(new))
        tokens += len(new)
        latencies.append(time.perf_counter() - begin)
    return texts, latencies, tokens, time.perf_counter() - started


def through_server(url: str, prompts: list[str], clients: int, max_tokens: int) -> tuple[list[str], list[float], list[int], float]:
    def one(prompt: str) -> tuple[str, float, int]:
        begin = time.perf_counter()
        response = httpx.post(f"{url}/v1/completions", json={"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}, timeout=600)
        response.raise_for_status()
        body = response.json()
        return body["choices"][0]["text"], time.perf_counter() - begin, body["usage"]["completion_tokens"]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, prompts))
    wall = time.perf_counter() - started
    texts, latencies, tokens = zip(*results, strict=True)
    return list(texts), list(latencies), list(tokens), wall


def scoring_prompts(loaded, text: str, count: int, tokens: int) -> list[list[int]]:
    ids = loaded.tokenizer.encode(text[: count * tokens * 8])  # about 4 characters a token: room to spare
    return [ids[i * tokens : (i + 1) * tokens] for i in range(count)]


def scoring_in_process(loaded, prompts: list[list[int]]) -> tuple[list[list[float]], float]:
    """One pass over each prompt, scoring every token after the first."""
    from gptlab.serving.logprobs import score_tokens

    scores = []
    started = time.perf_counter()
    with torch.inference_mode():
        for ids in prompts:
            scores.append(score_tokens(loaded.model, ids, 0, loaded.trained_window, 0, torch.device("cpu"))[0])
    return scores, time.perf_counter() - started


def scoring_through_server(url: str, prompts: list[list[int]], clients: int) -> tuple[list[list[float]], float]:
    def one(ids: list[int]) -> list[float]:
        body = {"prompt": ids, "max_tokens": 1, "echo": True, "logprobs": 1, "temperature": 0}
        response = httpx.post(f"{url}/v1/completions", json=body, timeout=600)
        response.raise_for_status()
        return response.json()["choices"][0]["logprobs"]["token_logprobs"][1 : len(ids)]

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        scores = list(pool.map(one, prompts))
    return scores, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=32, help="requests per level")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--tables", nargs="+", choices=["decoding", "scoring"], default=["decoding", "scoring"])
    parser.add_argument("--scoring-requests", type=int, default=16)
    parser.add_argument("--scoring-tokens", type=int, default=512, help="tokens per scoring prompt (at most 1024)")
    args = parser.parse_args()
    transformers.logging.set_verbosity_error()

    text = read_corpus("tinyshakespeare", os.environ.get("GPTLAB_DATA_DIR", REPO / "data"))
    lines = [line.strip() for line in text.splitlines() if len(line.split()) >= 4]
    prompts = lines[: args.requests]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2-124m-random"
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(folder)
        loaded = load_for_generation(init_from=str(folder))
        params = sum(p.numel() for p in loaded.model.parameters())
        peak = measure_peak_flops(torch.float32, "cpu")
        generate(loaded.model, torch.tensor([[0]]), 4, loaded.trained_window)  # warm-up
        decoding = "decoding" in args.tables
        if decoding:
            expected, base_latencies, base_tokens, base_wall = baseline(loaded, prompts, args.max_tokens)
        if "scoring" in args.tables:
            to_score = scoring_prompts(loaded, text, args.scoring_requests, args.scoring_tokens)
            scoring_in_process(loaded, to_score[:1])  # warm-up
            scored_here, scoring_wall = scoring_in_process(loaded, to_score)
        server, url = start_server(folder, Path(tmp) / "server.log", args.max_tokens)
        try:
            through_server(url, prompts[:2], 1, 4)  # warm-up
            rows = [("in process, one by one", 1, base_latencies, base_tokens, base_wall, True)] if decoding else []
            for clients in args.clients if decoding else []:
                texts, latencies, tokens, wall = through_server(url, prompts, clients, args.max_tokens)
                rows.append((f"serve.py, {clients} clients", clients, latencies, sum(tokens), wall, texts == expected))
            scoring_rows = [("in process, one pass each", scoring_wall, 0.0)] if "scoring" in args.tables else []
            for clients in args.clients if scoring_rows else []:
                scored, wall = scoring_through_server(url, to_score, clients)
                apart = max(abs(a - b) for mine, theirs in zip(scored, scored_here, strict=True) for a, b in zip(mine, theirs, strict=True))
                scoring_rows.append((f"serve.py, {clients} clients", wall, apart))
        finally:
            server.terminate()
            server.wait(timeout=30)

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"GPT-2 124M shape ({params / 1e6:.1f}M parameters), random weights, float32, greedy; {args.requests} requests "
          f"of {args.max_tokens} new tokens, prompts: lines of Tiny Shakespeare; fp32 matmul peak measured now: "
          f"{peak / 1e12:.3f} TFLOP/s")
    if rows:
        print(f"{'contender':<26} {'req/s':>7} {'p50 s':>7} {'p99 s':>7} {'tokens/s':>9} {'vs base':>8} {'MFU':>6}  same text")
        base_rate = args.requests / base_wall
    for name, _, latencies, tokens, wall, same in rows:
        rate = args.requests / wall
        p50, p99 = np.percentile(latencies, [50, 99])
        mfu = tokens / wall * 2 * params / peak
        print(f"{name:<26} {rate:>7.2f} {p50:>7.2f} {p99:>7.2f} {tokens / wall:>9.1f} {rate / base_rate:>7.2f}x {mfu:>6.1%}  {same}")
    if scoring_rows:
        scored_tokens = args.scoring_requests * args.scoring_tokens
        print(f"\nscoring (lm-eval's loglikelihood requests: echo, max_tokens 1, logprobs 1): {args.scoring_requests} "
              f"prompts of {args.scoring_tokens} tokens")
        print(f"{'contender':<26} {'req/s':>7} {'tokens/s':>9} {'vs base':>8} {'MFU':>6}  largest logprob difference")
    for name, wall, apart in scoring_rows:
        rate = scored_tokens / wall
        print(f"{name:<26} {args.scoring_requests / wall:>7.2f} {rate:>9.0f} {scoring_rows[0][1] / wall:>7.2f}x "
              f"{rate * 2 * params / peak:>6.1%}  {apart:.2e}")


if __name__ == "__main__":
    main()
