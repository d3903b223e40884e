"""The book's chapter-5 run beside ours: `make bench-book BOOK=path/to/LLMs-from-scratch`.

Runs the book's own script (LLMs-from-scratch, ch05/01_main-chapter-code/gpt_train.py, imported from the
checkout you point at, unchanged) and then `python train.py experiment=verdict_gpt124m`, on the same text
and machine, and prints both loss curves side by side with the final and lowest validation losses.

Offline: the book reads ./the-verdict.txt (a copy of our corpus file, so it downloads nothing) and
tiktoken's "gpt2" encoding is served from the local BPE files (gptlab.data.tokenizers.gpt2_encoding,
the same files tiktoken would download, checked by sha256).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BOOK_SCRIPT = Path("ch05") / "01_main-chapter-code"
# The book's eval: every 5 optimizer steps (global_step 0, 5, ...: after 1, 6, ... updates), one batch.
BOOK_EVAL_EVERY = 5


def run_book(book_dir: Path, corpus: Path, work: Path) -> list[tuple[int, float, float]]:
    """(updates taken, train loss, val loss) at each of the book's evaluations."""
    import tiktoken

    from gptlab.data.tokenizers import gpt2_encoding

    tiktoken.get_encoding = lambda name: gpt2_encoding()  # offline; the same encoding
    sys.path.insert(0, str(book_dir / BOOK_SCRIPT))
    import gpt_train  # the book's script, as published

    shutil.copy(corpus, work / "the-verdict.txt")
    os.chdir(work)
    config = {"vocab_size": 50257, "context_length": 256, "emb_dim": 768, "n_heads": 12, "n_layers": 12,
              "drop_rate": 0.1, "qkv_bias": False}
    settings = {"learning_rate": 5e-4, "num_epochs": 10, "batch_size": 2, "weight_decay": 0.1}
    train, val, _, _ = gpt_train.main(config, settings)
    return [(1 + i * BOOK_EVAL_EVERY, t, v) for i, (t, v) in enumerate(zip(train, val, strict=True))]


def run_ours(run_dir: Path, overrides: list[str]) -> tuple[dict[int, float], dict[int, float]]:
    """train/loss and val/loss by the number of updates taken, from metrics.csv."""
    command = [sys.executable, "train.py", "experiment=verdict_gpt124m", "logger=csv", f"hydra.run.dir={run_dir}",
               f"trainer.val_check_interval={BOOK_EVAL_EVERY}", "trainer.check_val_every_n_epoch=null", *overrides]
    subprocess.run(command, cwd=REPO, check=True)
    train, val = {}, {}
    with (run_dir / "csv" / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            if row.get("train/loss"):
                train[int(row["step"]) + 1] = float(row["train/loss"])  # the row of step s logs update s+1
            if row.get("val/loss"):
                val[int(row["step"]) + 1] = float(row["val/loss"])  # likewise: after update step+1
    # A row past the last update: validate_after_fit's, in runs from before it logged best/val_loss.
    return train, {updates: loss for updates, loss in val.items() if updates <= max(train)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--book", type=Path, required=True, help="a checkout of rasbt/LLMs-from-scratch")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("GPTLAB_DATA_DIR", REPO / "data")))
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides for our run")
    args = parser.parse_args()
    if not (args.book / BOOK_SCRIPT / "gpt_train.py").is_file():
        sys.exit(f"error: {args.book} has no {BOOK_SCRIPT}/gpt_train.py; pass --book a LLMs-from-scratch checkout")
    corpus = args.data_dir / "the-verdict.txt"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train, val = run_ours(work / "ours", args.overrides)
        book = run_book(args.book.resolve(), corpus.resolve(), work)

    print(f"\n{'updates':>7} | {'book train':>10} {'book val':>9} | {'ours train':>10} {'ours val':>9}")
    for updates, book_train, book_val in book:
        # Our validation nearest the book's (ours: after 5, 10, ... updates; the book: after 1, 6, 11, ...).
        ours_val = val.get(updates) or val.get(updates - 1) or val.get(updates + 4)
        ours_train = train.get(updates)
        print(f"{updates:>7} | {book_train:>10.3f} {book_val:>9.3f} | "
              f"{ours_train if ours_train is not None else float('nan'):>10.3f} "
              f"{ours_val if ours_val is not None else float('nan'):>9.3f}")
    book_vals = [v for _, _, v in book]
    print(f"\nbook: final train {book[-1][1]:.3f}, final val {book_vals[-1]:.3f}, lowest val {min(book_vals):.3f}")
    last = max(train)
    print(f"ours: final train {train[last]:.3f}, final val {val[max(val)]:.3f}, lowest val {min(val.values()):.3f}")


if __name__ == "__main__":
    main()
