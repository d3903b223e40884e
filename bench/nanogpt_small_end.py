"""The small end of `make bench-train`: `make train` against nanoGPT's own `train.py` with its published CPU
setting for character-level Shakespeare, on the same machine, one after the other (order alternating over
rounds), each as a user runs it: a fresh process, start-up and all.

nanoGPT's setting (its README, "I only have a macbook"): 4 layers, 4 heads, 128 wide, block 64, batch 12,
2000 iterations, lr 1e-3 cosine to 1e-4, dropout 0, fp32, evaluation every 250 iterations on 20 batches.
`make train` (experiment=shakespeare_char) trains the same model on the same schedule.

Each run reports its best validation loss its own way (nanoGPT: 20 random batches of its validation split;
ours: 40 fixed batches), so the losses are also measured the same way afterwards: each run's best checkpoint
(nanoGPT's ckpt.pt, loaded by its own model.py; our best.ckpt) scores every character of the validation
split (the text's last 10%, the same split in both) in windows of the block size, 64.

nanoGPT runs from the checkout you point at, unchanged. Its data step (data/shakespeare_char/prepare.py)
would download the text: our verified copy of the same file is put there as its input.txt first, so it
downloads nothing; its train.bin/val.bin land in that checkout, as its README's steps leave them.
"""

from __future__ import annotations

import importlib.util
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
NANOGPT_CPU_SETTING = [
    "config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1",
    "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
    "--lr_decay_iters=2000", "--dropout=0.0",
]  # fmt: skip
TOKENS_PER_STEP = 12 * 64
STEPS = 2000
BLOCK = 64


@dataclass
class SmallRun:
    contender: str
    wall_s: float
    best_val: float
    step_ms: float | None  # the median training step, as the run itself reports it
    checkpoint: Path  # the run's best weights
    precision: str = "fp32"
    same_text_val: float | None = None  # the best checkpoint's loss on the whole validation split


def prepare_nanogpt_data(nanogpt: Path, data_dir: Path) -> None:
    from gptlab.data.corpora import corpus_path

    folder = nanogpt / "data" / "shakespeare_char"
    if not (nanogpt / "train.py").is_file() or not folder.is_dir():
        sys.exit(f"{nanogpt} is not a nanoGPT checkout (no train.py or data/shakespeare_char); clone "
                 "https://github.com/karpathy/nanoGPT and pass its folder as NANOGPT=")
    if not (folder / "input.txt").exists():
        shutil.copy(corpus_path("tinyshakespeare", data_dir), folder / "input.txt")
    if not (folder / "train.bin").exists():
        subprocess.run([sys.executable, "prepare.py"], cwd=folder, check=True, stdout=subprocess.DEVNULL)


def run_nanogpt(nanogpt: Path, out_dir: Path) -> SmallRun:
    start = time.perf_counter()
    log = subprocess.run(
        [sys.executable, "train.py", *NANOGPT_CPU_SETTING, f"--out_dir={out_dir}"],
        cwd=nanogpt, check=True, capture_output=True, text=True,
    ).stdout
    wall = time.perf_counter() - start
    vals = [float(v) for v in re.findall(r"^step \d+: train loss [\d.]+, val loss ([\d.]+)", log, re.M)]
    # "iter 1990: loss 1.71, time 58.12ms, mfu ..." every iteration (log_interval=1); the first is warm-up.
    steps = [float(ms) for ms in re.findall(r"^iter \d+: loss [\d.]+, time ([\d.]+)ms", log, re.M)][1:]
    return SmallRun("nanoGPT train.py (its CPU setting)", wall, min(vals), statistics.median(steps), out_dir / "ckpt.pt")


def run_ours(run_dir: Path, overrides: list[str]) -> SmallRun:
    start = time.perf_counter()
    log = subprocess.run(
        [sys.executable, "train.py", "experiment=shakespeare_char", f"hydra.run.dir={run_dir}", *overrides],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout
    wall = time.perf_counter() - start
    best = float(re.search(r"^best val/loss: ([\d.]+)", log, re.M).group(1))
    chosen = re.search(r"^trainer.precision=auto: (\S+)", log, re.M)
    precision = {"32-true": "fp32", "bf16-mixed": "bf16"}.get(chosen.group(1), chosen.group(1)) if chosen else "?"
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    return SmallRun("ours, make train (experiment=shakespeare_char)", wall, best, None, checkpoint, precision)


def validation_ids(nanogpt: Path) -> torch.Tensor:
    """The validation split as ids: the text's last 10%, as nanoGPT's prepare.py and data=shakespeare split
    it; its 65 characters in sorted order are the ids of both (checked against nanoGPT's meta.pkl)."""
    from gptlab.data.datamodule import split_text
    from gptlab.data.tokenizers import CharTokenizer

    folder = nanogpt / "data" / "shakespeare_char"
    text = (folder / "input.txt").read_text(encoding="utf-8")
    tokenizer = CharTokenizer.from_text(text)
    with open(folder / "meta.pkl", "rb") as file:
        itos = pickle.load(file)["itos"]
    if "".join(itos[i] for i in range(len(itos))) != tokenizer.chars:
        sys.exit("nanoGPT's character ids differ from ours: its data/shakespeare_char/meta.pkl is not of this text")
    _, validation = split_text(text, 0.9)  # nanoGPT's cut too: int(0.9 * characters)
    return torch.tensor(tokenizer.encode(validation))


def nanogpt_model(nanogpt: Path, checkpoint: Path):
    """nanoGPT's GPT (its own model.py) with its run's best weights, as ids -> logits for every position."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", nanogpt / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=False)  # nanoGPT's file holds its config
    model = module.GPT(module.GPTConfig(**saved["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in saved["model"].items()})
    model.eval()
    return lambda ids: model(ids, ids)[0]  # given targets it returns every position's logits, else the last


def same_text_val(run: SmallRun, nanogpt: Path, ids: torch.Tensor) -> float:
    """Mean loss of a run's best checkpoint over every validation character (windows of 64, the first
    character of each window unscored: it has no context), measured the same way for both contenders."""
    from gptlab.checkpoints.loading import load_checkpoint_model
    from gptlab.evaluation.perplexity import score_stream

    if run.checkpoint.suffix == ".pt":
        model = nanogpt_model(nanogpt, run.checkpoint)
    else:
        model = load_checkpoint_model(run.checkpoint)[0]
    return score_stream(model, ids, context=BLOCK, stride=BLOCK, batch_size=64).metrics()["nll"]


def compare(nanogpt: Path, data_dir: Path, rounds: int, overrides: list[str], peak: float | None,
            flops_per_token: float) -> list[str]:
    """Markdown rows: each contender's median wall time and losses over ``rounds`` runs, and how much faster
    than nanoGPT ours is (the median of the rounds' ratios)."""
    prepare_nanogpt_data(nanogpt, data_dir)
    runs: dict[str, list[SmallRun]] = {"nanogpt": [], "ours": []}
    ids = validation_ids(nanogpt)
    with tempfile.TemporaryDirectory(prefix="bench-small-") as tmp:
        for i in range(rounds):
            order = ["nanogpt", "ours"] if i % 2 == 0 else ["ours", "nanogpt"]
            for name in order:
                out = Path(tmp) / f"{name}-{i}"
                run = run_nanogpt(nanogpt, out) if name == "nanogpt" else run_ours(out, overrides)
                run.same_text_val = same_text_val(run, nanogpt, ids)
                print(f"  {run.contender}: {run.wall_s:.1f} s, best val {run.best_val:.4f} (its own), "
                      f"{run.same_text_val:.4f} (whole validation split)", file=sys.stderr, flush=True)
                runs[name].append(run)
    # The ratio of each round's pair, then their median: the two runs of a round are minutes apart, so a
    # slow spell of a shared machine lands on both; medians of each side's walls would mix spells.
    ratios = [theirs.wall_s / ours.wall_s for theirs, ours in zip(runs["nanogpt"], runs["ours"], strict=True)]
    speedup = {"ours": statistics.median(ratios), "nanogpt": 1.0}
    rows = []
    for name in ("ours", "nanogpt"):
        wall = statistics.median(r.wall_s for r in runs[name])
        best = statistics.median(r.best_val for r in runs[name])
        same = statistics.median(r.same_text_val for r in runs[name])
        steps = [r.step_ms for r in runs[name] if r.step_ms]
        step = f"{statistics.median(steps):.1f} ms" if steps else "-"
        # MFU over the whole command: every training FLOP over the wall time, start-up and evaluation included.
        mfu = f"{100 * STEPS * TOKENS_PER_STEP * flops_per_token / wall / peak:.1f}%" if peak else "-"
        rows.append(f"| small (nanoGPT CPU) | {runs[name][0].precision} | {runs[name][0].contender} | {same:.4f} | {best:.4f} | {wall:.1f} s | "
                    f"{step} | {mfu} | {speedup[name]:.2f}x |")
    if rounds > 1:
        rows.append(f"\n(vs nanoGPT: the median of each round's ratio, {', '.join(f'{r:.2f}x' for r in ratios)})")
    return rows
