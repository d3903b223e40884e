"""Real sweeps: the Optuna sweeper minimising val/loss, and the SLURM launcher's config and job function."""

from __future__ import annotations

import pytest
import yaml
from cli_runner import TINY_RUN, assert_ok, clean_env, run_script
from hydra import compose, initialize_config_dir
from repo import REPO_ROOT

from gptlab.sweeps.slurm import TrainJob, slurm_parameters


@pytest.mark.e2e
def test_optuna_search_runs_trials_and_reports_the_lowest_val_loss(tmp_path):
    sweep_dir = tmp_path / "search"
    result = run_script(
        "train.py",
        "-m",
        "hparams_search=lr_warmup_wd",
        f"hydra.sweep.dir={sweep_dir}",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
        f"hydra.sweeper.storage=sqlite:///{tmp_path / 'optuna.db'}",  # a study that can be continued
        "model=gpt_tiny",
        "data=verdict",
        *TINY_RUN,
        "logger=csv",
    )
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

    import optuna

    study = optuna.load_study(study_name="lr_warmup_wd", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert len(study.trials) == 3 and study.best_value == pytest.approx(best["best_value"])

    from gptlab.sweeps.report import write_report

    report = write_report(sweep_dir, tmp_path / "report")["markdown"].read_text()
    assert "Optuna's best:" in report and report.count("| ok |") == 3


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
