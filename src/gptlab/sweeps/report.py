"""Summarise a Hydra multirun folder: one row per job (overrides, best val/loss, val/ppl, steps, time; for an
eval.py sweep, gptlab.sweeps.eval_report: its metrics).

    python report.py sweep_dir=multirun/DATE/TIME            # writes report.md, report.csv, val_loss.png there
    python report.py sweep_dir=multirun/DATE/TIME out_dir=DIR

Each job is read from its own folder: .hydra/overrides.yaml (what the sweep changed) and csv/metrics.csv
(what it logged). Jobs that failed or logged no validation are listed too, marked as such.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gptlab.core.entrypoint import RUN_END_LOGGER
from gptlab.core.errors import ConfigError
from gptlab.core.files import atomic_write_text, csv_text, markdown_table_text, output_folder
from gptlab.sweeps.eval_report import is_eval_job, write_eval_report
from gptlab.sweeps.plots import Curves, curves_from_rows, plot_sweep, read_rows

COLUMNS = ["job", "overrides", "best val/loss", "val/ppl", "steps", "tokens seen", "time (s)", "status"]


@dataclass
class JobResult:
    job: str
    overrides: list[str]
    curves: Curves
    steps: int | None
    tokens_seen: float | None
    seconds: float | None
    status: str

    @property
    def best_val_loss(self) -> float | None:
        return self.curves.best_val_loss

    @property
    def label(self) -> str:
        return " ".join(self.overrides) or f"job {self.job}"

    def row(self) -> dict[str, str]:
        best = self.best_val_loss
        return {
            "job": self.job,
            "overrides": self.label,
            "best val/loss": "" if best is None else f"{best:.4f}",
            "val/ppl": "" if best is None else f"{math.exp(min(best, 700.0)):.2f}",
            "steps": "" if self.steps is None else str(self.steps),
            "tokens seen": "" if self.tokens_seen is None else f"{self.tokens_seen:.0f}",
            "time (s)": "" if self.seconds is None else f"{self.seconds:.1f}",
            "status": self.status,
        }


def job_folders(sweep_dir: Path) -> list[Path]:
    """The sweep's job folders (those with a .hydra/overrides.yaml), in job-number order."""
    jobs = [p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")]
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def varying_overrides(job_dir: Path, sweep_overrides: set[str] = frozenset()) -> list[str]:
    """The job's overrides but those of the whole sweep: what differs between jobs is what a reader wants."""
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    return [o for o in overrides if o not in sweep_overrides and not o.startswith("hydra.")]


def read_job(job_dir: Path, sweep_overrides: set[str] = frozenset()) -> JobResult:
    varying = varying_overrides(job_dir, sweep_overrides)
    metrics = job_dir / "csv" / "metrics.csv"
    failure = _failure(job_dir)
    if not metrics.is_file():
        return JobResult(job_dir.name, varying, Curves(), None, None, None, failure or "no metrics (failed?)")
    rows = read_rows(metrics)
    curves = curves_from_rows(rows)
    train_steps = [int(float(r["step"])) for r in rows if r.get("train/loss") and r.get("step")]
    tokens = [float(r["tokens_seen"]) for r in rows if r.get("tokens_seen")]
    started = job_dir / ".hydra" / "config.yaml"
    seconds = metrics.stat().st_mtime - started.stat().st_mtime if started.is_file() else None
    status = "ok" if curves.val else "no validation"
    if failure:
        status = failure
    return JobResult(
        job=job_dir.name,
        overrides=varying,
        curves=curves,
        steps=max(train_steps) + 1 if train_steps else None,
        tokens_seen=max(tokens) if tokens else None,
        seconds=seconds,
        status=status,
    )


def _failure(job_dir: Path) -> str | None:
    """'failed: <what ended the job>' (the commands write their error line to the job's train.log), 'failed' for
    a traceback there, None for a job that ended well."""
    log = next((job_dir / f"{command}.log" for command in ("train", "eval") if (job_dir / f"{command}.log").is_file()), None)
    if log is None:
        return None
    text = log.read_text(errors="replace")
    marker = f"[{RUN_END_LOGGER}][ERROR] - "
    for line in text.splitlines():
        if marker in line:
            label, _, message = line.split(marker, 1)[1].partition(": ")
            what = message.partition("; ")[0]  # what went wrong; how to fix it follows
            return f"failed: {what}" if label == "error" else f"{label}: {what}"
    return "failed" if "Traceback" in text else None


def common_overrides(job_dirs: list[Path]) -> set[str]:
    per_job = [set(yaml.safe_load((d / ".hydra" / "overrides.yaml").read_text()) or []) for d in job_dirs]
    return set.intersection(*per_job) if len(per_job) > 1 else set()


def csv_table(rows: list[dict[str, str]]) -> str:
    return csv_text(COLUMNS, rows)


def write_report(sweep_dir: str | Path, out_dir: str | Path | None = None) -> dict[str, Path]:
    """Write report.md, report.csv and val_loss.png for a multirun folder of train.py (report.md and
    report.csv for one of eval.py); return their paths."""
    sweep_dir = Path(sweep_dir)
    out_dir = Path(out_dir) if out_dir else sweep_dir
    if not sweep_dir.is_dir():
        what = "is a file" if sweep_dir.exists() else "does not exist"
        raise ConfigError(f"sweep_dir={sweep_dir} {what}; give the folder of a multirun, e.g. multirun/DATE/TIME")
    jobs = job_folders(sweep_dir)
    if not jobs:
        raise ConfigError(
            f"sweep_dir={sweep_dir} holds no job folders (<job>/.hydra/overrides.yaml); give the folder of a "
            "multirun, e.g. multirun/DATE/TIME"
        )
    shared = common_overrides(jobs)
    heading = f"# Sweep {sweep_dir}\n\n{len(jobs)} jobs"
    if shared:
        heading += "; common to all: `" + " ".join(sorted(shared)) + "`"
    output_folder(out_dir, "out_dir")
    if all(is_eval_job(job) for job in jobs):  # eval.py's: no curves, each job's eval_results.json
        labels = [(job, " ".join(varying_overrides(job, shared)) or f"job {job.name}", _failure(job)) for job in jobs]
        return write_eval_report(out_dir, labels, heading)
    results = [read_job(job, shared) for job in jobs]
    # Best first; jobs without a validation loss last, in job order.
    results.sort(key=lambda r: (r.best_val_loss is None, r.best_val_loss or 0.0))
    rows = [r.row() for r in results]
    paths = {
        "markdown": out_dir / "report.md",
        "csv": out_dir / "report.csv",
        "plot": out_dir / "val_loss.png",
    }
    best_line = _optuna_best(sweep_dir)
    text = heading + "\n\n" + markdown_table_text(COLUMNS, rows) + (f"\n{best_line}\n" if best_line else "")
    text += f"\n![validation loss]({paths['plot'].name})\n"
    atomic_write_text(text, paths["markdown"])
    atomic_write_text(csv_table(rows), paths["csv"])
    plot_sweep(
        {f"{r.job}: {r.label}": r.curves for r in results if r.curves.val},
        paths["plot"],
        title=f"val/loss per job: {sweep_dir.name}",
    )
    return paths


def _optuna_best(sweep_dir: Path) -> str | None:
    """The Optuna sweeper's verdict (optimization_results.yaml), when the sweep was one."""
    results = sweep_dir / "optimization_results.yaml"
    if not results.is_file():
        return None
    data = yaml.safe_load(results.read_text()) or {}
    params = " ".join(f"{k}={v}" for k, v in (data.get("best_params") or {}).items())
    return f"Optuna's best: `{params}` (val/loss {data.get('best_value')})"


def report_from_config(cfg: dict[str, Any]) -> None:
    """What report.py does with conf/report.yaml: write the report and print it."""
    if not cfg.get("sweep_dir"):
        raise ConfigError("missing sweep_dir=..., the multirun folder: python report.py sweep_dir=multirun/DATE/TIME")
    paths = write_report(str(cfg["sweep_dir"]), cfg.get("out_dir"))
    print(paths["markdown"].read_text(encoding="utf-8"))
    print("\n".join(f"wrote {p}" for p in paths.values()))
