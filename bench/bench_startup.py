"""How long a command takes to start: torchmetrics imported lean (gptlab.compat.torchmetrics, the default)
against its full import (GPTLAB_TORCHMETRICS_EXTRAS=1), side by side in one run, rounds alternating.

    python bench/bench_startup.py                 # 5 rounds
    python bench/bench_startup.py --rounds 3

Two measures, each a fresh process: importing gptlab and Lightning, and a whole tiny train.py run (the tiny
GPT on The Verdict, 4 steps, CSV logger), wall clock from start to exit.
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
IMPORT = [sys.executable, "-c", "import gptlab, lightning"]
TINY_RUN = [
    sys.executable, "train.py", "model=gpt_tiny", "data=verdict", "debug=fast", "data.batch_size=4",
    "data.max_length=32", "logger=csv",
]
CONTENDERS = {"lean (default)": {}, "full (GPTLAB_TORCHMETRICS_EXTRAS=1)": {"GPTLAB_TORCHMETRICS_EXTRAS": "1"}}


def timed(command: list[str], extra_env: dict[str, str]) -> float:
    env = {**os.environ, "WANDB_MODE": "disabled", **extra_env}
    env.setdefault("GPTLAB_DATA_DIR", str(REPO / "data"))
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command[1:])} failed:\n{result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="runs of each contender (order alternates)")
    args = parser.parse_args()
    times: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            names = list(CONTENDERS) if round_ % 2 == 0 else list(reversed(CONTENDERS))
            for name in names:
                env = CONTENDERS[name]
                times.setdefault(("import gptlab, lightning", name), []).append(timed(IMPORT, env))
                run_dir = Path(scratch) / f"{round_}-{len(times)}-{name[:4]}"
                run = timed([*TINY_RUN, f"hydra.run.dir={run_dir}"], env)
                times.setdefault(("tiny train.py run", name), []).append(run)
    print(f"{'measure':<26} {'contender':<38} {'median':>8} {'runs':>30}")
    for measure in ("import gptlab, lightning", "tiny train.py run"):
        medians = {}
        for name in CONTENDERS:
            runs = times[(measure, name)]
            medians[name] = statistics.median(runs)
            print(f"{measure:<26} {name:<38} {medians[name]:>7.2f}s {' '.join(f'{t:.2f}' for t in runs):>30}")
        lean, full = medians.values()
        print(f"{measure:<26} {'lean saves':<38} {full - lean:>7.2f}s ({full / lean:.2f}x faster)")


if __name__ == "__main__":
    main()
