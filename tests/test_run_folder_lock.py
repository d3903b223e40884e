"""A run folder is one run's: a second train.py there while one trains (a resume typed twice, a job requeued
while the first still runs) is refused in one line naming the process that holds the folder, and a refused
command leaves the folder's saved config (.hydra/, which Hydra writes before the command runs) as it was."""

from __future__ import annotations

import fcntl
import os

import pytest
from cli_runner import TINY_GPT_RUN, assert_ok, run_train

from gptlab.training.run_folder_lock import LOCK_FILE, is_first_rank

pytestmark = pytest.mark.e2e


def test_a_second_run_in_a_folder_in_use_is_refused_and_goes_once_it_is_free(tmp_path):
    run_dir = tmp_path / "run"
    assert_ok(run_train(run_dir, *TINY_GPT_RUN, "logger=csv"))
    assert (run_dir / LOCK_FILE).read_text() == ""  # released at the end: nothing names a live process
    saved = {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}
    assert set(saved) == {"config.yaml", "hydra.yaml", "overrides.yaml"}

    # A fresh start in the folder is refused, and its config does not replace the run's own record.
    fresh = run_train(run_dir, "model=decoder", "data=shakespeare", "logger=csv")
    assert fresh.returncode == 2 and "already holds checkpoints" in fresh.stderr, fresh.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == saved

    # A run killed while it wrote a checkpoint leaves its temporary file (atomic_write's name), as large as a
    # checkpoint; the next run that holds the folder removes it (none can be writing it then).
    unfinished = run_dir / "checkpoints" / ".last.ckpt.k1ll3d_x.tmp"
    unfinished.write_bytes(b"\0" * (3 << 20))
    # Another process (this test, pid written as train.py writes its own) holds the folder: a resume is refused.
    with open(run_dir / LOCK_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(str(os.getpid()))
        held.flush()
        refused = run_train(run_dir, *TINY_GPT_RUN, "logger=csv", "trainer.max_steps=6", "ckpt_path=last")
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: the run folder {run_dir.resolve()} is in use by a train.py that is still running (pid {os.getpid()}); "
        "let it finish or stop it first (it saves last.ckpt on Ctrl-C or SIGTERM), then resume: two runs in one "
        "folder overwrite each other's checkpoints and metrics"
    )
    assert {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == saved
    assert unfinished.exists()  # the refused run holds nothing: the file may be another's write in progress
    # Its holder gone (the kernel drops a lock with its file), the same resume runs, and its config is saved.
    resumed = run_train(run_dir, *TINY_GPT_RUN, "logger=csv", "trainer.max_steps=6", "ckpt_path=last")
    assert_ok(resumed)
    assert "trainer.max_steps=6" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert not unfinished.exists()
    assert f"note: removed 1 unfinished checkpoint file(s) (3.0 MB) that a killed run left in {run_dir.resolve() / 'checkpoints'}" in resumed.stderr


@pytest.mark.parametrize("variable, value, first", [
    (None, None, True), ("LOCAL_RANK", "0", True), ("LOCAL_RANK", "1", False), ("RANK", "3", False),
    ("SLURM_PROCID", "0", True), ("SLURM_PROCID", "2", False), ("NODE_RANK", "1", False),
])
def test_only_a_runs_first_rank_takes_the_folder(monkeypatch, variable, value, first):
    for name in ("RANK", "LOCAL_RANK", "GROUP_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    if variable:
        monkeypatch.setenv(variable, value)
    assert is_first_rank() is first
