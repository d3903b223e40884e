"""The sweep report on a real two-job multirun folder."""

from __future__ import annotations

import csv
import re

import pytest
from cli_runner import TINY_RUN, assert_ok, run_script
from test_plots import assert_png

from gptlab.core.errors import ConfigError


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("report") / "sweep"
    result = run_script(
        "train.py",
        "-m",
        f"hydra.sweep.dir={sweep_dir}",
        "optim.lr=1e9,1e-4,2e-3",  # job 0 diverges at its first step
        "model=gpt_tiny",
        "data=verdict",
        *TINY_RUN,
        "logger=csv",
    )
    # The diverging job fails alone: its line names it, the other jobs run, and the sweep exits 2 at the end
    # (it exited at the first failure, so no later job ran).
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert re.search(r"^error: job 0 \([^)]*optim.lr=1000000000.0[^)]*\): train/loss is nan", result.stderr, re.M)
    assert result.stderr.rstrip().endswith("error: 1 of 3 jobs failed (job 0); each one's error is above")
    assert "Error executing job" not in result.stderr  # Hydra's second line for the failed job, saying less
    assert result.stdout.count("best val/loss:") == 2
    # The report lists the failed job with its error: its command is said where a job failed too.
    assert result.stdout.rstrip().endswith(
        f"sweep folder: {sweep_dir} (3 jobs); compare them: python report.py sweep_dir={sweep_dir}"
    )
    return sweep_dir


@pytest.mark.e2e
def test_report_lists_every_job_with_its_results_and_plots_their_validation_loss(sweep_dir, tmp_path):
    out = tmp_path / "report"
    result = run_script("report.py", f"sweep_dir={sweep_dir}", f"out_dir={out}")
    assert_ok(result)
    assert result.stdout.startswith(f"# Sweep {sweep_dir}") and f"wrote {out / 'report.csv'}" in result.stdout
    with (out / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["job"] for r in rows) == ["0", "1", "2"]
    # Only what differs between the jobs: the arguments common to the sweep are listed once above the table.
    assert {r["overrides"] for r in rows} == {"optim.lr=1000000000.0", "optim.lr=0.0001", "optim.lr=0.002"}
    *trained, diverged = rows  # jobs without a validation loss last
    assert diverged["job"] == "0" and diverged["best val/loss"] == ""
    assert diverged["status"].startswith("failed: train/loss is nan at step 1 (lr ")  # its line in train.log
    assert diverged["status"].endswith("): training stopped")  # what went wrong, not how to fix it
    losses = [float(r["best val/loss"]) for r in trained]
    assert losses == sorted(losses)  # best first
    for r in trained:
        assert r["status"] == "ok" and r["steps"] == "4" and float(r["time (s)"]) > 0
        assert float(r["val/ppl"]) == pytest.approx(2.718281828 ** float(r["best val/loss"]), rel=1e-3)
    markdown = (out / "report.md").read_text()
    assert "optim.lr=0.0001" in markdown and "optim.lr=0.002" in markdown and "| job |" in markdown
    assert_png(out / "val_loss.png")


def test_report_on_a_folder_without_jobs_says_what_to_give(tmp_path):
    from gptlab.sweeps.report import report_from_config

    with pytest.raises(ConfigError, match="holds no job folders.*multirun/DATE/TIME"):
        report_from_config({"sweep_dir": str(tmp_path)})
    # A mistyped path was "holds no job folders", as if the folder were there.
    with pytest.raises(ConfigError, match=r"sweep_dir=\S+nope does not exist; give the folder of a multirun"):
        report_from_config({"sweep_dir": str(tmp_path / "nope")})
    (tmp_path / "report.md").write_text("")
    with pytest.raises(ConfigError, match=r"report.md is a file; give the folder of a multirun"):
        report_from_config({"sweep_dir": str(tmp_path / "report.md")})
    with pytest.raises(ConfigError, match="missing sweep_dir="):
        report_from_config({"sweep_dir": None})


def test_a_report_folder_that_cannot_be_made_is_one_line(sweep_dir, tmp_path):
    from gptlab.sweeps.report import write_report

    (tmp_path / "a-file").write_text("where the report would go")
    with pytest.raises(ConfigError, match=r"cannot create out_dir=.*a-file/report \(Not a directory\)"):
        write_report(sweep_dir, tmp_path / "a-file" / "report")


@pytest.mark.e2e
def test_report_of_an_eval_sweep_tabulates_each_jobs_results(tmp_path):
    """eval.py -m (checkpoints or settings compared): report.py had listed every job as "no metrics (failed?)"."""
    import json

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_positions=64, n_embd=32, n_layer=2, n_head=2)).save_pretrained(tmp_path / "gpt2")
    sweep_dir = tmp_path / "sweep"
    evaluated = run_script(
        "eval.py", "-m", f"hydra.sweep.dir={sweep_dir}", f"init_from={tmp_path / 'gpt2'}", "data=verdict",
        "eval.context=16,32,128",  # job 2: longer than the model's 64 positions
    )
    assert evaluated.returncode == 2 and "error: 1 of 3 jobs failed (job 2)" in evaluated.stderr, evaluated.stderr[-2000:]
    # Its last line says where the jobs are and how to compare them (only train.py's sweeps said it).
    command = evaluated.stdout.rstrip().splitlines()[-1]
    assert command == f"sweep folder: {sweep_dir} (3 jobs); compare them: python report.py sweep_dir={sweep_dir}"
    result = run_script(*command.split("python ")[1].split())
    assert_ok(result)
    with (sweep_dir / "report.csv").open() as f:
        rows = {r["job"]: r for r in csv.DictReader(f)}
    for job in ("0", "1"):
        saved = json.loads((sweep_dir / job / "eval_results.json").read_text())["tasks"]["perplexity"]
        assert rows[job]["status"] == "ok" and rows[job]["perplexity/tokens"] == str(saved["tokens"])
        assert float(rows[job]["perplexity/nll"]) == pytest.approx(saved["nll"], abs=1e-4)
    assert rows["2"]["status"].startswith("failed: eval.context=128 is longer than the model's context")
    assert list(rows)[-1] == "2"  # lowest perplexity first, the failed job last
    assert "| eval.context=32 |" in (sweep_dir / "report.md").read_text()
