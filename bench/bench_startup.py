"""How long a command takes to start, side by side in one run, rounds alternating: torchmetrics imported lean
(gptlab.compat.torchmetrics, the default) against its full import (GPTLAB_TORCHMETRICS_EXTRAS=1), and, with
--against, another checkout of gptlab (an earlier commit) run the same way.

    python bench/bench_startup.py                            # 5 rounds
    python bench/bench_startup.py --rounds 3
    git worktree add /tmp/gptlab-before <commit>
    python bench/bench_startup.py --against /tmp/gptlab-before

Four measures, each a fresh process, wall clock from start to exit: importing gptlab and Lightning; a
whole tiny train.py run (the tiny GPT on The Verdict, 4 steps, CSV logger); generate.py from that run's
checkpoint (8 tokens); eval.py on that checkpoint (perplexity on the run's own validation split). Each
contender's processes import the gptlab of its own checkout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY_RUN = [
    "train.py", "model=gpt_tiny", "data=verdict", "debug=fast", "data.batch_size=4", "data.max_length=32",
    "logger=csv",
]
LEAN, FULL = "lean (default)", "full (GPTLAB_TORCHMETRICS_EXTRAS=1)"


def timed(checkout: Path, args: list[str], extra_env: dict[str, str]) -> float:
    # PYTHONPATH first: the checkout's own src, whichever one the virtual environment installed.
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(checkout / "src"), **extra_env}
    env.setdefault("GPTLAB_DATA_DIR", str(REPO / "data"))
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], cwd=checkout, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{checkout}: {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="runs of each contender (order alternates)")
    parser.add_argument("--against", type=Path, help="another gptlab checkout to run beside this one (lean)")
    args = parser.parse_args()
    contenders = {LEAN: (REPO, {}), FULL: (REPO, {"GPTLAB_TORCHMETRICS_EXTRAS": "1"})}
    if args.against:
        if not (args.against / "train.py").is_file():
            sys.exit(f"error: --against {args.against} is not a gptlab checkout (no train.py there)")
        contenders[f"{args.against} (lean)"] = (args.against.resolve(), {})
    measures = ("import gptlab, lightning", "tiny train.py run", "generate.py, 8 tokens", "eval.py, perplexity")
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            names = list(contenders) if round_ % 2 == 0 else list(reversed(contenders))
            for index, name in enumerate(names):
                checkout, env = contenders[name]
                run_dir = Path(scratch) / f"{round_}-{index}"
                commands = (
                    ["-c", "import gptlab, lightning"],
                    [*TINY_RUN, f"hydra.run.dir={run_dir}"],
                    ["generate.py", f"ckpt_path={run_dir}/checkpoints/last.ckpt", "prompt=I HAD", "max_new_tokens=8"],
                    ["eval.py", f"ckpt_path={run_dir}/checkpoints/last.ckpt", f"hydra.run.dir={run_dir}/eval"],
                )
                for measure, command in zip(measures, commands, strict=True):
                    times.setdefault((measure, name), []).append(timed(checkout, command, env))
    print(f"{'measure':<26} {'contender':<38} {'median':>8} {'runs':>30}")
    for measure in measures:
        medians = {name: statistics.median(times[(measure, name)]) for name in contenders}
        for name, median in medians.items():
            print(f"{measure:<26} {name:<38} {median:>7.2f}s {' '.join(f'{t:.2f}' for t in times[(measure, name)]):>30}")
        for name, median in medians.items():
            if name != LEAN:
                print(f"{measure:<26} {'lean vs ' + name[:30]:<38} {median - medians[LEAN]:>7.2f}s saved "
                      f"({median / medians[LEAN]:.2f}x)")


if __name__ == "__main__":
    main()
