"""The sweep report on a real two-job multirun folder."""

from __future__ import annotations

import csv

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
        "optim.lr=1e-4,2e-3",
        "model=gpt_tiny",
        "data=verdict",
        *TINY_RUN,
        "logger=csv",
    )
    assert_ok(result)
    return sweep_dir


@pytest.mark.e2e
def test_report_lists_every_job_with_its_results_and_plots_their_validation_loss(sweep_dir, tmp_path):
    out = tmp_path / "report"
    result = run_script("report.py", f"sweep_dir={sweep_dir}", f"out_dir={out}")
    assert_ok(result)
    assert result.stdout.startswith(f"# Sweep {sweep_dir}") and f"wrote {out / 'report.csv'}" in result.stdout
    with (out / "report.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["job"] for r in rows) == ["0", "1"]
    # Only what differs between the jobs: the arguments common to the sweep are listed once above the table.
    assert {r["overrides"] for r in rows} == {"optim.lr=0.0001", "optim.lr=0.002"}
    losses = [float(r["best val/loss"]) for r in rows]
    assert losses == sorted(losses)  # best first
    for r in rows:
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
