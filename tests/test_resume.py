"""Resume that is exact: a run killed at any moment continues, from its last checkpoint, bit for bit."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_runner import assert_ok, clean_env, read_metrics, run_train
from repo import DATA_DIR, REPO_ROOT
from slow_runs import checkpoint_step, importable_from_tests, slow_overrides, wait_for

from gptlab.checkpoints.reader import load_checkpoint_safely
from gptlab.core.files import atomic_write_bytes
from gptlab.data.sampler import ResumableRandomSampler

pytestmark = pytest.mark.e2e

# Two short epochs and then some (5 batches each), validation every 2 batches, a checkpoint every step,
# dropout on: a resume must get the data order, the position in the epoch and the RNG right.
RUN = [
    "trainer.accelerator=cpu",  # the bitwise promise is the CPU's (tests/test_gpu.py resumes on a GPU)
    "model=gpt_tiny",
    "data=verdict",
    "data.batch_size=4",
    "data.max_length=32",
    "model.drop_rate=0.1",
    "logger=csv",
    "trainer.max_epochs=10",
    "trainer.max_steps=12",
    "trainer.limit_train_batches=5",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "callbacks.last_checkpoint.every_n_train_steps=1",
    "callbacks.text_sample.max_new_tokens=4",
]


def train_env() -> dict[str, str]:
    """The environment of every run here: one thread each. CPU results are bitwise reproducible for a fixed
    thread count, but across processes the multi-threaded MKL/OpenMP path still gave a different last bit
    now and then (one CI run in about three: step 0's grad_norm, before any resume, even with MKL_CBWR=AUTO
    and MKL/OMP_DYNAMIC off). With one thread the multi-threaded path is out of the comparison, which is
    then of the resume logic alone."""
    return importable_from_tests(clean_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))


def train(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_train(run_dir, *overrides, env=train_env())


def start_train(run_dir: Path, *overrides: str, slow_steps: float = 0, slow_saves: float = 0) -> subprocess.Popen:
    """train.py in the background, slowed down (tests/slow_runs.py) so that a test can kill it mid-run."""
    slow = slow_overrides(steps=slow_steps, saves=slow_saves)
    return subprocess.Popen(
        [sys.executable, "train.py", f"hydra.run.dir={run_dir}", *overrides, *slow],
        cwd=REPO_ROOT,
        env=train_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if not torch.equal(a[name], b[name]):
            differ = (a[name] != b[name]).sum().item()
            largest = (a[name] - b[name]).abs().max().item()
            pytest.fail(f"{name}: {differ} of {a[name].numel()} values differ, by at most {largest:.3g}")


def assert_same_runs(resumed: Path, whole: Path) -> None:
    """The resumed run's metrics and final weights are the uninterrupted run's, bit for bit.

    The metrics come first: when the runs differ, the first row that differs says at which step (a wrong
    batch, a skipped validation, other dropout masks) before the weights say by how much.
    """
    resumed_rows, whole_rows = metric_rows(resumed), metric_rows(whole)
    for resumed_row, whole_row in zip(resumed_rows, whole_rows, strict=False):  # length checked after
        assert resumed_row == whole_row, f"first differing metrics row:\nresumed {resumed_row}\nwhole   {whole_row}"
    assert len(resumed_rows) == len(whole_rows)
    assert_bitwise_equal(weights(resumed), weights(whole))


def train_losses(run_dir: Path) -> dict[int, str]:
    return {int(r["step"]): r["train/loss"] for r in read_metrics(run_dir) if r.get("train/loss")}


def metric_rows(run_dir: Path) -> list[tuple[str, ...]]:
    """Every logged row (train and validation), without the wall-clock throughput figures."""
    rows = []
    for row in read_metrics(run_dir):
        values = sorted((k, v) for k, v in row.items() if v and not k.startswith("throughput/"))
        rows.append(tuple(f"{k}={v}" for k, v in values))
    return rows


# Gradient accumulation over 2 batches in epochs of 5 batches (each epoch's last batch steps alone), a
# validation every 4 batches (at a step boundary), a checkpoint every optimizer step.
ACCUMULATING = [
    *(o for o in RUN if not o.startswith(("trainer.val_check_interval", "trainer.max_steps"))),
    "trainer.accumulate_grad_batches=2",
    "trainer.val_check_interval=4",
    "trainer.max_steps=8",
]
# (overrides, the step after whose checkpoint the run is killed, the final step). Both kill steps are
# followed by a validation, which the test hook slows down: the kill lands between the step and the end
# of its validation.
# The same on the user's own text (data=text): windows drawn from token shards through memory maps.
ON_SHARDS = [*(o for o in RUN if not o.startswith("data=")), "data=text", f"data.path={DATA_DIR}/the-verdict.txt"]
# A mixture (data=mixture): the order of sources and of each source's windows resumes too.
ON_MIXTURE = [
    *(o for o in RUN if not o.startswith("data=")),
    "data=mixture",
    f"data.sources=[{{kind:verdict,weight:1}},{{kind:text,path:{DATA_DIR}/tinyshakespeare.txt,weight:2}}]",
]
SCHEDULES = {
    "every-step": (RUN, 7, 12),
    "accumulation": (ACCUMULATING, 5, 8),
    "shards": (ON_SHARDS, 7, 12),
    "mixture": (ON_MIXTURE, 7, 12),
}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run of a schedule left alone (trained once per module, on first use)."""
    runs: dict[str, Path] = {}

    def run_of(schedule: str) -> Path:
        if schedule not in runs:
            runs[schedule] = tmp_path_factory.mktemp(f"uninterrupted-{schedule}") / "run"
            assert_ok(train(runs[schedule], *SCHEDULES[schedule][0]))
        return runs[schedule]

    return run_of


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_sigkill_mid_epoch_then_resume_is_bitwise_identical(tmp_path, uninterrupted, schedule):
    whole = uninterrupted(schedule)
    run, kill_after, final_step = SCHEDULES[schedule]
    run_dir = tmp_path / "run"
    process = start_train(run_dir, *run, slow_steps=0.3)
    last = run_dir / "checkpoints" / "last.ckpt"
    # Past an epoch boundary, in the middle of an epoch.
    wait_for(lambda: checkpoint_step(last) >= kill_after, process)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    killed_at = checkpoint_step(last)
    assert kill_after <= killed_at < final_step, killed_at

    result = train(run_dir, *run, "ckpt_path=last")
    assert_ok(result)
    assert "exists and is not empty" not in result.stderr  # Lightning's warning about the checkpoints resumed from
    assert "warning: " not in result.stderr  # the same settings: the same schedule, nothing to warn of
    assert checkpoint_step(last) == final_step
    # The same metrics file continues: every row (validation included) once, as in the run left alone.
    assert_same_runs(run_dir, whole)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_saves_a_checkpoint_and_prints_the_resume_command(tmp_path, uninterrupted, signum):
    whole = uninterrupted("every-step")
    run_dir = tmp_path / "run"
    process = start_train(run_dir, *RUN, slow_steps=0.3)
    wait_for(lambda: checkpoint_step(run_dir / "checkpoints" / "last.ckpt") >= 3, process)
    process.send_signal(signum)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in out + err
    [line] = [line for line in err.splitlines() if line.startswith("interrupted: ")]
    name = signal.Signals(signum).name
    assert f"interrupted: {name} at step" in line and str(run_dir / "checkpoints" / "last.ckpt") in line
    command = line.split("resume with: ", 1)[1]
    assert command.startswith("python train.py ") and f"hydra.run.dir={run_dir}" in command
    assert command.endswith("ckpt_path=last")
    stopped_at = checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
    assert 3 <= stopped_at < 12

    if signum == signal.SIGINT:
        return  # the same resume path as SIGTERM; one full resume is enough
    # The printed command, run as printed, finishes the run exactly as if it had never stopped.
    args = shlex.split(command)[1:]
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=train_env(), capture_output=True, text=True
    )
    assert_ok(result)
    assert_same_runs(run_dir, whole)


def test_kill_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path):
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    # Every save pauses half-way through writing its temporary file.
    process = start_train(run_dir, *RUN, slow_saves=2)
    wait_for(
        lambda: checkpoint_step(checkpoints / "last.ckpt") >= 1 and any(checkpoints.glob(".last.ckpt.*.tmp")),
        process,
    )
    process.send_signal(signal.SIGKILL)
    process.communicate()
    [partial] = checkpoints.glob(".last.ckpt.*.tmp")
    assert partial.stat().st_size < (checkpoints / "last.ckpt").stat().st_size  # it died mid-write
    checkpoint = load_checkpoint_safely(checkpoints / "last.ckpt")  # weights_only, complete: resumable
    assert checkpoint["global_step"] >= 1 and checkpoint["optimizer_states"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"old")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(b"new" * 1000, target)
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind


def test_sampler_resumes_inside_an_epoch_with_the_same_order():
    full = ResumableRandomSampler(50, seed=3)
    full.set_epoch(2)
    order = list(full)
    resumed = ResumableRandomSampler(50, seed=3)
    resumed.resume_at(epoch=2, offset=20)
    assert list(resumed) == order[20:]
    assert len(resumed) == 50
    resumed.set_epoch(3)
    assert list(resumed) != order and sorted(resumed) == list(range(50))  # a new epoch: a new full order
    assert list(ResumableRandomSampler(50, seed=3).permutation(3)) == list(resumed.permutation(3))


@pytest.mark.parametrize("ranks", [2, 3])
def test_under_ddp_ranks_take_disjoint_windows_that_make_up_the_epoch_and_resume_alike(ranks):
    samplers = [ResumableRandomSampler(50, seed=3, rank=r, num_replicas=ranks) for r in range(ranks)]
    for sampler in samplers:
        sampler.set_epoch(1)
    shares = [list(sampler) for sampler in samplers]
    taken = [window for share in shares for window in share]
    assert len(taken) == len(set(taken)) == 50 - 50 % ranks  # disjoint; all but the remainder
    assert all(len(share) == len(s) == 50 // ranks for share, s in zip(shares, samplers, strict=True))
    assert sorted(taken) != taken  # shuffled, not cut in blocks
    # Every rank resumes inside the epoch where its own share left off.
    resumed = ResumableRandomSampler(50, seed=3, rank=ranks - 1, num_replicas=ranks)
    resumed.resume_at(epoch=1, offset=5)
    assert list(resumed) == shares[-1][5:]
    # A DistributedSampler already: Lightning, under DDP, neither replaces nor wraps it.
    assert isinstance(resumed, torch.utils.data.DistributedSampler)


def test_a_resumed_run_continues_its_wandb_run(tmp_path):
    from omegaconf import OmegaConf

    from gptlab.training.loggers import resume_run_id, wandb_settings

    (tmp_path / "wandb" / "offline-run-20261122_071500-abc123").mkdir(parents=True)
    cfg = OmegaConf.create({"ckpt_path": "last", "paths": {"output_dir": str(tmp_path)}})
    assert resume_run_id(cfg) == "abc123"
    settings = wandb_settings(OmegaConf.create({"name": None, "group": None, "offline": True}), "abc123")
    assert settings.id == "abc123" and settings.resume == "allow"
    cfg.ckpt_path = None
    assert resume_run_id(cfg) is None  # a fresh run starts its own


def test_csv_metrics_are_appended_not_deleted(tmp_path):
    from gptlab.compat.lightning import AppendingCSVLogger

    first = AppendingCSVLogger(save_dir=tmp_path, name="csv", version="")
    first.log_metrics({"train/loss": 1.0}, step=0)
    first.log_metrics({"train/loss": 0.9}, step=1)
    first.save()
    second = AppendingCSVLogger(save_dir=tmp_path, name="csv", version="")
    second.experiment.drop_rows_from(1)  # step 1 is run again after the resume
    second.log_metrics({"train/loss": 0.8, "lr": 0.1}, step=1)
    second.save()
    rows = read_metrics(tmp_path)
    assert [(r["step"], r["train/loss"], r.get("lr", "")) for r in rows] == [
        ("0", "1.0", ""),
        ("1", "0.8", "0.1"),
    ]


# Runs stopped by max_steps=5 (one epoch of 5 batches) and resumed up to 12 steps. A constant LR makes the
# stopped run the first part of the 12-step one.
ENDINGS = {
    # Validation once per epoch (the default): the last checkpoint is the one after the epoch's validation.
    "epoch-end-validation": [],
    # No validation after the first epoch: the last checkpoint is the one written when training ends.
    "no-final-validation": ["trainer.check_val_every_n_epoch=2"],
    # The same under DDP (2 CPU processes), each rank taking its own windows of the epoch's order.
    "ddp": ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"],
    # DDP stopped in the middle of an epoch (epochs of 4 batches): each rank resumes inside its share.
    "ddp-mid-epoch": ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.limit_train_batches=4"],
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_resume_from_the_checkpoint_of_a_finished_run_is_bitwise_identical(tmp_path, ending):
    overridden = tuple(o.split("=")[0] + "=" for o in ENDINGS[ending])
    run = [o for o in RUN if not o.startswith(("trainer.val_check_interval", "trainer.max_steps", *overridden))]
    run += ["scheduler=constant", "validate_after_fit=false", *ENDINGS[ending]]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    uninterrupted = start_train(whole, *run, "trainer.max_steps=12")
    assert_ok(train(parts, *run, "trainer.max_steps=5"))
    assert checkpoint_step(parts / "checkpoints" / "last.ckpt") == 5
    assert_ok(train(parts, *run, "trainer.max_steps=12", "ckpt_path=last"))
    out, err = uninterrupted.communicate()
    assert uninterrupted.returncode == 0, err[-3000:]
    if ending == "ddp-mid-epoch":
        # Stopped mid-epoch, the first part validates at its last step (FinalValidation), which the run
        # left alone does not: every training step and the final weights must still be the same.
        assert train_losses(parts) == train_losses(whole) and len(train_losses(whole)) == 12
        assert_bitwise_equal(weights(parts), weights(whole))
    else:
        assert_same_runs(parts, whole)
    if ending == "epoch-end-validation":
        # The finished run resumed again: nothing to train, which it did in silence (exit 0, and only
        # Lightning's INFO line "`Trainer.fit` stopped: `max_steps=12` reached" said why).
        again = train(parts, *run, "trainer.max_steps=12", "ckpt_path=last")
        assert_ok(again)
        assert "note: nothing was left to train: the checkpoint is at step 12, where trainer.max_steps=12 is reached" in again.stderr
        assert_bitwise_equal(weights(parts), weights(whole))


def test_sigterm_during_the_final_step_lets_the_run_finish(tmp_path):
    run_dir = tmp_path / "run"
    run = [o for o in RUN if not o.startswith("trainer.max_steps")] + ["trainer.max_steps=4"]
    process = start_train(run_dir, *run, slow_steps=1.0)
    wait_for(lambda: checkpoint_step(run_dir / "checkpoints" / "last.ckpt") >= 3, process)
    process.send_signal(signal.SIGTERM)  # during step 4 of 4, which a validation follows
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    assert "SIGTERM came during the final step: the run is complete" in err
    assert checkpoint_step(run_dir / "checkpoints" / "last.ckpt") == 4
    val_steps = [int(r["step"]) for r in read_metrics(run_dir) if r.get("val/loss")]
    assert 3 in val_steps  # the final step's validation ran (Lightning logs it at the step's index, 3)
