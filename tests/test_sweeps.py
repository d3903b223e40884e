"""Real sweeps: the Optuna sweeper minimising val/loss, and the SLURM launcher's config and job function."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import yaml
from cli_runner import TINY_RUN, assert_ok, clean_env, run_script
from hydra import compose, initialize_config_dir
from repo import REPO_ROOT
from slow_runs import checkpoint_step, importable_from_tests, slow_overrides, wait_for

from gptlab.sweeps.slurm import TrainJob, slurm_parameters


def search_args(tmp_path, *overrides: str) -> list[str]:
    """A search of the tiny model (three trials), into tmp_path/search, the study kept in tmp_path/optuna.db."""
    return [
        "train.py",
        "-m",
        "hparams_search=lr_warmup_wd",
        f"hydra.sweep.dir={tmp_path / 'search'}",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}",  # a study that can be continued
        "model=gpt_tiny",
        "data=verdict",
        *TINY_RUN,
        "logger=csv",
        *overrides,
    ]


def search(tmp_path, *overrides: str):
    return run_script(*search_args(tmp_path, *overrides))


def saved_study(tmp_path):
    import optuna

    return optuna.load_study(study_name="lr_warmup_wd", storage=f"sqlite:///{tmp_path / 'optuna.db'}")


@pytest.mark.e2e
def test_optuna_search_runs_trials_and_reports_the_lowest_val_loss(tmp_path):
    sweep_dir = tmp_path / "search"
    result = search(tmp_path, "hydra.sweeper.sampler.n_startup_trials=2")
    assert_ok(result)
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert jobs == ["0", "1", "2"]
    tried = []
    for job in jobs:
        overrides = yaml.safe_load((sweep_dir / job / ".hydra" / "overrides.yaml").read_text())
        tried.append(
            {
                o.split("=")[0]: float(o.split("=")[1])
                for o in overrides
                if o.startswith(("optim.", "scheduler."))
            }
        )
    assert all(set(t) == {"optim.lr", "optim.weight_decay", "scheduler.warmup_ratio"} for t in tried)
    assert all(1e-4 <= t["optim.lr"] <= 3e-3 for t in tried)
    assert len({t["optim.lr"] for t in tried}) == 3  # the sampler proposed, not a fixed grid
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    losses = [
        float(line.split()[2]) for line in result.stdout.splitlines() if line.startswith("best val/loss:")
    ]
    assert len(losses) == 3
    assert best["best_value"] == pytest.approx(min(losses), abs=1e-4)  # what train.py returned, minimised

    study = saved_study(tmp_path)
    assert len(study.trials) == 3 and study.best_value == pytest.approx(best["best_value"])

    from gptlab.sweeps.report import write_report

    report = write_report(sweep_dir, tmp_path / "report")["markdown"].read_text()
    assert "Optuna's best:" in report and report.count("| ok |") == 3


@pytest.mark.e2e
def test_a_trial_that_diverges_is_marked_failed_and_the_search_goes_on(tmp_path):
    # A diverging trial exited the whole process: the search ended at the first too-high learning rate.
    result = search(tmp_path, "optim.lr=choice(1e9,1e-3)")  # 1e9 diverges at the first step
    assert_ok(result)  # the search finished, with a best trial
    import optuna

    study = saved_study(tmp_path)
    failed = [t.number for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == 3 and failed and completed, [t.state for t in study.trials]
    assert all(t.params["optim.lr"] == 1e9 for t in study.trials if t.number in failed)
    jobs = ", ".join(f"job {n}" for n in failed)
    assert f"note: {len(failed)} of 3 jobs failed ({jobs}); each one's error is above" in result.stderr
    assert study.best_value == min(t.value for t in completed)


@pytest.mark.e2e
def test_a_stopped_search_fails_its_trial_and_a_continued_one_tries_new_values(tmp_path):
    import optuna

    # Stopped in job 0's training: its trial stayed RUNNING in the saved study for ever.
    long_trials = ["trainer.max_epochs=100", "callbacks.last_checkpoint.every_n_train_steps=1"]
    process = subprocess.Popen(
        [sys.executable, *search_args(tmp_path, *long_trials, *slow_overrides(steps=0.2))],
        cwd=REPO_ROOT,
        env=importable_from_tests(clean_env()),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: checkpoint_step(tmp_path / "search" / "0" / "checkpoints" / "last.ckpt") >= 1, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    [stopped] = saved_study(tmp_path).trials
    assert stopped.state == optuna.trial.TrialState.FAIL, stopped.state
    assert "note: Optuna trial 0 of study lr_warmup_wd marked failed (stopped before it finished)" in err

    # Continued: its seeded sampler started over and proposed trial 0's values again, and its job 0 found
    # the first search's checkpoints in the same sweep folder and failed.
    result = search(tmp_path, "hydra.sweeper.n_trials=2")
    assert_ok(result)
    assert "note: study lr_warmup_wd in sqlite:///" in result.stderr
    assert "has 1 trial: continuing it from trial 1 (job folder 1), its sampler seeded 1338" in result.stderr
    trials = saved_study(tmp_path).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL] + [optuna.trial.TrialState.COMPLETE] * 2
    assert all(t.params != stopped.params for t in trials[1:]), [t.params for t in trials]
    assert sorted(p.name for p in (tmp_path / "search").iterdir() if p.is_dir()) == ["0", "1", "2"]
    for trial in trials[1:]:
        overrides = yaml.safe_load((tmp_path / "search" / str(trial.number) / ".hydra" / "overrides.yaml").read_text())
        assert f"optim.lr={trial.params['optim.lr']}" in overrides  # job folder N holds trial N


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO_ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_optuna_search_config_minimises_val_loss():
    cfg = compose_train("hparams_search=lr_warmup_wd")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "minimize"  # what train() returns: the best val/loss
    assert set(sweeper.params) == {"optim.lr", "scheduler.warmup_ratio", "optim.weight_decay"}


def test_slurm_launcher_follows_the_trainer_and_its_plugin_loads():
    from hydra.utils import get_class

    cfg = compose_train("hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2", "trainer.devices=4")
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert get_class(launcher._target_).__name__ == "SlurmLauncher"
    assert slurm_parameters(nodes=2, devices=4)["tasks_per_node"] == 4


@pytest.mark.e2e
def test_slurm_job_function_trains_and_requeues_into_the_same_folder(tmp_path, monkeypatch):
    for key, value in clean_env().items():
        monkeypatch.setenv(key, value)
    run_dir = tmp_path / "run"
    job = TrainJob(["model=gpt_tiny", "data=verdict", *TINY_RUN, "logger=csv"], run_dir)
    assert job() == 0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    requeued = job.checkpoint()  # what submitit runs after a preemption or timeout
    command = requeued.function.command()
    assert f"hydra.run.dir={run_dir}" in command and command[-1] == "ckpt_path=last"


@pytest.mark.e2e
def test_a_search_whose_every_trial_failed_ends_in_one_line_that_says_so(tmp_path):
    result = search(tmp_path, "hydra.sweeper.n_trials=2", "optim.lr=1e9")  # diverges at the first step
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    # Optuna 2.10's words for it were "Record does not exist." (the plugin asks for the best trial at the end).
    assert result.stderr.splitlines()[-1] == (
        "error: 2 of 2 jobs failed (job 0, job 1); each one's error is above; then the sweeper: no trial of "
        "study lr_warmup_wd completed, so it has no best parameters"
    )


@pytest.mark.e2e
def test_a_study_storage_that_cannot_be_opened_is_one_line(tmp_path):
    # SQLAlchemy's traceback, before any trial ran.
    missing = tmp_path / "no-such-folder" / "optuna.db"
    result = search(tmp_path, f"hydra.sweeper.storage=sqlite:///{missing}")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: hydra.sweeper.storage=sqlite:///{missing} cannot be opened (")
    assert "unable to open database file" in line and "hydra.sweeper.storage=null" in line
    assert not (tmp_path / "search").exists()


def test_the_line_after_a_search_whose_every_trial_failed(monkeypatch, capsys):
    # The sweeper's own error (it asks for the best trial) follows the failures.
    from gptlab.core import sweep_jobs

    monkeypatch.setattr(sweep_jobs, "_jobs", sweep_jobs._Jobs())
    for job in range(2):
        sweep_jobs.job_started()
        sweep_jobs.fail_job(sweep_jobs.Job(job, ("optim.lr=1e9",)), "error", "train/loss is nan at step 1")
    with pytest.raises(SystemExit) as stopped:
        sweep_jobs.end_of_sweep(ValueError("no trial of study s completed, so it has no best parameters"))
    assert stopped.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: job 0 (optim.lr=1e9): train/loss is nan at step 1",
        "error: job 1 (optim.lr=1e9): train/loss is nan at step 1",
        "error: 2 of 2 jobs failed (job 0, job 1); each one's error is above; then the sweeper: no trial of study "
        "s completed, so it has no best parameters",
    ]


def test_an_error_that_is_no_failed_jobs_is_left_to_the_caller(monkeypatch):
    from gptlab.core import sweep_jobs

    monkeypatch.setattr(sweep_jobs, "_jobs", sweep_jobs._Jobs())
    sweep_jobs.end_of_sweep(RuntimeError("a bug"))  # no job failed: returns, the caller re-raises
    sweep_jobs.job_started()
    sweep_jobs.job_started()
    sweep_jobs.fail_job(sweep_jobs.Job(0, ("x=1",)), "error", "bad")
    sweep_jobs.end_of_sweep(RuntimeError("a bug in the sweeper"))  # one of two failed: not a consequence


def test_a_failure_from_a_job_run_elsewhere_is_one_line(monkeypatch, capsys):
    # A launcher that runs each job in a process of its own (SLURM) hands the failure back unrecorded here.
    from gptlab.core import sweep_jobs

    monkeypatch.setattr(sweep_jobs, "_jobs", sweep_jobs._Jobs())
    with pytest.raises(SystemExit) as stopped:
        sweep_jobs.end_of_sweep(sweep_jobs.SweepJobFailed("job 3 (optim.lr=-1): optim.lr must be positive"))
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "error: job 3 (optim.lr=-1): optim.lr must be positive (the first job that failed)\n"
    )


def test_an_interrupted_search_trial_resumes_as_a_single_run_in_its_folder(monkeypatch):
    # The printed resume command of a trial carried hparams_search=, whose config switches to MULTIRUN:
    # run as printed, it started a new search instead of finishing the trial.
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from gptlab.training.run import resume_command

    cfg = compose_train("hparams_search=lr_warmup_wd", "model=gpt_tiny", "optim.lr=0.001")
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = "/runs/search/3"
    monkeypatch.setattr("sys.argv", ["train.py"])
    command = resume_command(cfg)
    assert command == (
        "python train.py hparams_search=lr_warmup_wd model=gpt_tiny optim.lr=0.001 hydra.run.dir=/runs/search/3 "
        "hydra.mode=RUN ckpt_path=last"
    )
    resumed = compose_train(*command.split()[2:])
    assert str(resumed.hydra.mode) == "RunMode.RUN" and resumed.hydra.run.dir == "/runs/search/3"


def test_a_folderless_commands_sweep_folder_goes_only_if_empty(monkeypatch, tmp_path):
    from gptlab.core import sweep_jobs

    def sweep_folder(time: str, *job_files: str):
        folder = tmp_path / "multirun" / "2026-12-07" / time
        for job in ("0", "1"):
            (folder / job).mkdir(parents=True)
        (folder / "multirun.yaml").write_text("hydra: {}")
        for name in job_files:
            (folder / name).write_text("written by the command")
        return folder

    kept, removed = sweep_folder("00-00-00", "1/out.txt"), sweep_folder("00-00-01")
    for folder in (kept, removed):
        monkeypatch.setattr(sweep_jobs, "_jobs", sweep_jobs._Jobs(folder_unused=folder))
        sweep_jobs.remove_unused_sweep_folder()
    assert (kept / "1" / "out.txt").is_file() and (kept / "multirun.yaml").is_file()
    assert not removed.exists() and kept.parent.is_dir()  # multirun/DATE holds the other sweep
    (kept / "1" / "out.txt").unlink()
    monkeypatch.setattr(sweep_jobs, "_jobs", sweep_jobs._Jobs(folder_unused=kept))
    sweep_jobs.remove_unused_sweep_folder()
    assert list(tmp_path.iterdir()) == []  # the last sweep of multirun/: its empty parents go with it


def test_a_rank_of_a_multirun_job_names_the_job_in_its_error_line(monkeypatch, capsys):
    # A DDP job's ranks run as single runs: whichever rank failed first printed the line (Lightning's
    # watcher may kill the others before they print), and rank 1's did not say which job it was.
    from gptlab.core.entrypoint import report_user_errors
    from gptlab.core.errors import ConfigError
    from gptlab.core.sweep_jobs import SWEEP_JOB_ENV

    monkeypatch.setenv(SWEEP_JOB_ENV, "job 0 (optim.lr=1e9)")
    with pytest.raises(SystemExit), report_user_errors():
        raise ConfigError("train/loss is nan at step 1")
    assert capsys.readouterr().err == "error: job 0 (optim.lr=1e9): train/loss is nan at step 1\n"


def test_the_ranks_a_multirun_job_starts_get_its_name_in_their_environment(monkeypatch):
    # Lightning copies the environment for a rank before it asks for the rank's command (rank_command, where
    # the name was set): no rank of a sweep's first job got it, and the next job's ranks got the previous name.
    from lightning.fabric.plugins.environments import LightningEnvironment
    from lightning.fabric.strategies.launchers import subprocess_script

    from gptlab.core.sweep_jobs import SWEEP_JOB_ENV, Job
    from gptlab.training import distributed

    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", SWEEP_JOB_ENV)})
    started = []
    monkeypatch.setattr(subprocess_script.subprocess, "Popen", lambda command, env, cwd: started.append(env) or object())
    monkeypatch.setattr(distributed, "is_multirun_job", lambda: True)
    for job in (Job(0, ("optim.lr=1e9",)), Job(1, ("optim.lr=1e-3",))):
        monkeypatch.setattr(distributed, "current_job", lambda job=job: job)
        distributed.launch_ranks_as_single_runs()
        subprocess_script._SubprocessScriptLauncher(LightningEnvironment(), num_processes=2, num_nodes=1)._call_children_scripts()
        distributed.end_process_group()
    assert [env.get(SWEEP_JOB_ENV) for env in started] == ["job 0 (optim.lr=1e9)", "job 1 (optim.lr=1e-3)"]
