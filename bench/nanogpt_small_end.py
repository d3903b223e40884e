"""The small end of `make bench-train`: `make train` against nanoGPT's own `train.py` with its published CPU
setting for character-level Shakespeare, on the same machine, one after the other (order alternating over
rounds), each as a user runs it: a fresh process, start-up and all.

nanoGPT's setting (its README, "I only have a macbook"): 4 layers, 4 heads, 128 wide, block 64, batch 12,
2000 iterations, lr 1e-3 cosine to 1e-4, dropout 0, fp32, evaluation every 250 iterations on 20 batches.
`make train` (experiment=shakespeare_char) trains the same model on the same schedule.

nanoGPT runs from the checkout you point at, unchanged. Its data step (data/shakespeare_char/prepare.py)
would download the text: our verified copy of the same file is put there as its input.txt first, so it
downloads nothing; its train.bin/val.bin land in that checkout, as its README's steps leave them.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NANOGPT_CPU_SETTING = [
    "config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1",
    "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--max_iters=2000",
    "--lr_decay_iters=2000", "--dropout=0.0",
]  # fmt: skip
TOKENS_PER_STEP = 12 * 64
STEPS = 2000


@dataclass
class SmallRun:
    contender: str
    wall_s: float
    best_val: float
    step_ms: float | None  # the median training step, as the run itself reports it
    precision: str = "fp32"


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
    return SmallRun("nanoGPT train.py (its CPU setting)", wall, min(vals), statistics.median(steps))


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
    return SmallRun("ours, make train (experiment=shakespeare_char)", wall, best, None, precision)


def compare(nanogpt: Path, data_dir: Path, rounds: int, overrides: list[str], peak: float | None,
            flops_per_token: float) -> list[str]:
    """Markdown rows: each contender's median wall time and best validation loss over ``rounds`` runs."""
    prepare_nanogpt_data(nanogpt, data_dir)
    runs: dict[str, list[SmallRun]] = {"nanogpt": [], "ours": []}
    with tempfile.TemporaryDirectory(prefix="bench-small-") as tmp:
        for i in range(rounds):
            order = ["nanogpt", "ours"] if i % 2 == 0 else ["ours", "nanogpt"]
            for name in order:
                out = Path(tmp) / f"{name}-{i}"
                run = run_nanogpt(nanogpt, out) if name == "nanogpt" else run_ours(out, overrides)
                print(f"  {run.contender}: {run.wall_s:.1f} s, best val {run.best_val:.4f}", file=sys.stderr, flush=True)
                runs[name].append(run)
    reference = statistics.median(r.wall_s for r in runs["nanogpt"])
    rows = []
    for name in ("ours", "nanogpt"):
        wall = statistics.median(r.wall_s for r in runs[name])
        best = statistics.median(r.best_val for r in runs[name])
        steps = [r.step_ms for r in runs[name] if r.step_ms]
        step = f"{statistics.median(steps):.1f} ms" if steps else "-"
        # MFU over the whole command: every training FLOP over the wall time, start-up and evaluation included.
        mfu = f"{100 * STEPS * TOKENS_PER_STEP * flops_per_token / wall / peak:.1f}%" if peak else "-"
        rows.append(f"| small (nanoGPT CPU) | {runs[name][0].precision} | {runs[name][0].contender} | best val {best:.4f} | {wall:.1f} s | "
                    f"{step} | {mfu} | {reference / wall:.2f}x |")
    return rows
