"""Run the entry points as a user would: a subprocess in the repo root, offline, with a fresh run folder."""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

from repo import DATA_DIR, REPO_ROOT

# Small enough for seconds per run on two CPU cores; every e2e run starts from these.
TINY_RUN = ["debug=fast", "data.batch_size=4", "data.max_length=32"]
# The tiny GPT on the smallest corpus: for runs whose subject is not the model (config, start-up, errors).
TINY_GPT_RUN = ["model=gpt_tiny", "data=verdict", *TINY_RUN]
TINY_DECODER = ["model=decoder", "model.emb_dim=32", "model.n_heads=2", "model.context_length=64"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HF_"))}
    env.update(GPTLAB_DATA_DIR=str(DATA_DIR), PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    env.update(extra)
    return env


def run_script(
    script: str, *overrides: str, env: dict | None = None, timeout: int = 600, python_args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """``python_args``: flags of Python itself, e.g. ``("-X", "importtime")`` (see :func:`imported_modules`)."""
    return subprocess.run(
        [sys.executable, *python_args, script, *overrides],
        cwd=REPO_ROOT,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_train(
    run_dir: Path, *overrides: str, env: dict | None = None, python_args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    return run_script("train.py", f"hydra.run.dir={run_dir}", *overrides, env=env, python_args=python_args)


IMPORT_TIMES = ("-X", "importtime")


def imported_modules(result: subprocess.CompletedProcess) -> set[str]:
    """The modules a command run with ``python_args=IMPORT_TIMES`` imported (Python lists them on stderr)."""
    return {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def last_value(rows: list[dict[str, str]], key: str) -> float:
    values = [float(r[key]) for r in rows if r.get(key)]
    assert values, f"no {key} logged"
    return values[-1]


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\nSTDOUT:\n{result.stdout[-3000:]}\nSTDERR:\n{result.stderr[-3000:]}"


def assert_finite(value: float) -> None:
    assert math.isfinite(value), value
