"""Evaluation speed on one set of weights: gptlab against lm-evaluation-harness's `hf` model, same requests.

    python bench/bench_eval.py                          # GPT-2 124M shape, random weights, window 256
    python bench/bench_eval.py --window 1024 --tokens 16384 --items 64

Contenders, each given exactly the same requests (lm-eval's `Instance`s, called on the model object as
lm-eval's evaluator calls it, so task building and dataset loading are not timed):

- perplexity: lm-eval's `loglikelihood_rolling` on Tiny Shakespeare's validation text (as lm-eval's wikitext
  task asks it) by lm-eval's `hf` model (HFLM on the weights exported to a Hugging Face folder) and by
  gptlab's lm-eval model (`GptlabLM`); and eval.py's own loop (`score_streams`, stride = window), which scores
  the same tokens by slightly different windows (the Hugging Face guide's).
- multiple choice: lm-eval's `loglikelihood` on HellaSwag-shaped items (a context of three lines of the play,
  four candidate next lines) by HFLM and by GptlabLM, the latter also with packing off (each choice in a row
  of its own, its context repeated, as before packing); acc and acc_norm follow.

Prints tokens/s (perplexity) and items/s (multiple choice), each ratio to HFLM, MFU of the forward passes
against the fp32 matmul peak measured in this run, and the largest difference between the two models'
log-likelihoods (the same numbers, or the speed means nothing). float32, batch --batch, CPU unless --device.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers

from gptlab.data.corpora import read_corpus
from gptlab.evaluation.perplexity import score_streams
from gptlab.hub.export import export_to_hf
from gptlab.models.flops import measure_peak_flops, model_flops_per_token
from gptlab.models.language_model import language_model


def instances(kind: str, arguments: list[tuple]):
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=args, idx=i) for i, args in enumerate(arguments)]


def choice_items(text: str, count: int, seed: int = 0) -> list[tuple[str, list[str], int]]:
    """HellaSwag-shaped items: three lines of the play as the context; the true next line among three others."""
    lines = [line.strip() for line in text.splitlines() if len(line.split()) >= 4]
    rng = random.Random(seed)
    items = []
    for start in rng.sample(range(len(lines) - 4), count):
        truth = lines[start + 3]
        choices = [truth, *rng.sample(lines, 3)]
        rng.shuffle(choices)
        items.append((" ".join(lines[start : start + 3]), choices, choices.index(truth)))
    return items


def timed(fn):
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def accuracy(lls: list[float], items) -> tuple[float, float]:
    scores = iter(lls)
    correct = correct_norm = 0
    for _, choices, label in items:
        ll = np.array([next(scores) for _ in choices])
        lengths = np.array([float(len(" " + c)) for c in choices])  # lm-eval's acc_norm: characters
        correct += int(np.argmax(ll) == label)
        correct_norm += int(np.argmax(ll / lengths) == label)
    return correct / len(items), correct_norm / len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=int, default=256, help="max_length of both models (tokens)")
    parser.add_argument("--tokens", type=int, default=8192, help="tokens of Shakespeare's validation text scored")
    parser.add_argument("--items", type=int, default=40, help="multiple-choice items (4 choices each)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    from lm_eval.models.huggingface import HFLM

    from gptlab.evaluation.harness import GptlabLM

    text = read_corpus("tinyshakespeare", os.environ.get("GPTLAB_DATA_DIR", Path(__file__).parents[1] / "data"))
    val = text[int(0.9 * len(text)) :]
    torch.manual_seed(0)
    hf_model = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()  # 124M shape, random weights
    with tempfile.TemporaryDirectory() as folder:
        from gptlab.hub.gpt2_import import gpt_from_hf_model

        ours_model, _ = gpt_from_hf_model(hf_model)
        export_to_hf(ours_model, Path(folder) / "hf", tokenizer_spec={"kind": "gpt2"})
        common = dict(device=args.device, batch_size=args.batch, max_length=args.window)
        theirs = HFLM(pretrained=str(Path(folder) / "hf"), dtype="float32", **common)
        ours = GptlabLM(init_from=str(Path(folder) / "hf"), dtype="float32", **common)

    peak = measure_peak_flops(torch.float32, args.device)
    forward_flops = model_flops_per_token(ours.model, args.window) / 3  # training's 6N + attention, forward only
    ids = ours.tok_encode(val)[: args.tokens]
    document = ours.tok_decode(ids)
    items = choice_items(val, args.items)
    pairs = [(context, " " + choice) for context, choices, _ in items for choice in choices]
    pair_tokens = sum(min(len(ours.tok_encode(c + x)), args.window) for c, x in pairs)

    # Warm-up: kernel selection and first-touch of the weights, for every contender.
    for lm in (theirs, ours):
        lm.loglikelihood(instances("loglikelihood", pairs[:2]), disable_tqdm=True)

    rows = []
    rolling = {}
    for name, lm in (("lm-eval hf", theirs), ("gptlab in lm-eval", ours)):
        (total,), seconds = timed(lambda lm=lm: lm.loglikelihood_rolling(instances("loglikelihood_rolling", [(document,)]), disable_tqdm=True))
        rolling[name] = total
        rows.append(("perplexity", name, len(ids) / seconds, "tokens/s", seconds, len(ids) * forward_flops / seconds, f"ppl {np.exp(-total / len(ids)):.3f}"))
    score, seconds = timed(lambda: score_streams(ours.model, [np.array(ids)], args.window, args.window, args.batch, ours.device, None))
    rows.append(("perplexity", "gptlab eval.py", score.tokens / seconds, "tokens/s", seconds, len(ids) * forward_flops / seconds, f"ppl {np.exp(score.nll / score.tokens):.3f} (guide's windows)"))

    choice_lls = {}
    scorer = language_model(ours.model)
    for name, lm, packed in (("lm-eval hf", theirs, None), ("gptlab, one a row", ours, False), ("gptlab in lm-eval", ours, True)):
        if packed is not None:  # the same model with and without packing an item's choices in one row
            scorer.supports_packing = packed
        results, seconds = timed(lambda lm=lm: lm.loglikelihood(instances("loglikelihood", pairs), disable_tqdm=True))
        choice_lls[name] = [ll for ll, _ in results]
        acc, acc_norm = accuracy(choice_lls[name], items)
        rows.append(("multiple choice", name, len(items) / seconds, "items/s", seconds, pair_tokens * forward_flops / seconds, f"acc {acc:.3f} acc_norm {acc_norm:.3f}"))

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, device {args.device}")
    print(f"GPT-2 124M shape, random weights, float32, window {args.window}, batch {args.batch}; "
          f"{len(ids)} tokens, {len(items)} items ({len(pairs)} requests, {pair_tokens} tokens)")
    print(f"fp32 matmul peak measured now: {peak / 1e12:.3f} TFLOP/s; MFU counts a full forward's FLOPs (the head at "
          "every position), so where gptlab skips the head (multiple choice) its figure is an effective rate")
    print(f"{'task':<16} {'contender':<20} {'speed':>16} {'seconds':>8} {'vs hf':>6} {'MFU':>6}  numbers")
    baseline = {task: speed for task, name, speed, *_ in rows if name == "lm-eval hf"}
    for task, name, speed, unit, seconds, flops, numbers in rows:
        print(f"{task:<16} {name:<20} {speed:>9.1f} {unit:<6} {seconds:>8.2f} {speed / baseline[task]:>5.2f}x {flops / peak:>6.1%}  {numbers}")
    rolling_diff = abs(rolling["lm-eval hf"] - rolling["gptlab in lm-eval"]) / abs(rolling["lm-eval hf"])
    choice_diff = max(abs(a - b) for a, b in zip(choice_lls["lm-eval hf"], choice_lls["gptlab in lm-eval"], strict=True))
    print(f"same numbers: rolling log-likelihood relative difference {rolling_diff:.2e}; "
          f"largest difference of a choice's log-likelihood {choice_diff:.2e} nats")


if __name__ == "__main__":
    main()
