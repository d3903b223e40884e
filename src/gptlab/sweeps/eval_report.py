"""An eval.py sweep summarised: one row per job, its overrides and every metric of its eval_results.json.

    python eval.py -m ckpt_path=outputs/A,outputs/B tasks=[perplexity,lambada] tasks.lambada.path=...
    python report.py sweep_dir=multirun/DATE/TIME     # report.md and report.csv, lowest perplexity first

report.py read only training metrics (csv/metrics.csv), so every job of such a sweep was listed as
"no metrics (failed?)".
"""

from __future__ import annotations

import json
from pathlib import Path

from gptlab.core.files import atomic_write_text, csv_text, markdown_table_text

RESULTS = "eval_results.json"


def is_eval_job(job_dir: Path) -> bool:
    return (job_dir / RESULTS).is_file() or (job_dir / "eval.log").is_file()


def eval_rows(jobs: list[tuple[Path, str, str | None]]) -> tuple[list[str], list[dict[str, str]]]:
    """Columns and rows for ``jobs``: (job folder, its overrides, why it failed or None); lowest perplexity
    first, where the jobs measured one, then the others in job order."""
    found = [(job_dir, label, failure, _results(job_dir)) for job_dir, label, failure in jobs]
    found.sort(key=lambda job: (job[3].get("perplexity/nll") is None, job[3].get("perplexity/nll") or 0.0))
    metrics = list(dict.fromkeys(key for *_, results in found for key in results))
    rows = [
        {
            "job": job_dir.name,
            "overrides": label,
            **{metric: _cell(results.get(metric)) for metric in metrics},
            "status": failure or ("ok" if results else "no eval_results.json"),
        }
        for job_dir, label, failure, results in found
    ]
    return ["job", "overrides", *metrics, "status"], rows


def _results(job_dir: Path) -> dict[str, float]:
    """'task/metric' -> value from the job's eval_results.json ({} where it wrote none)."""
    path = job_dir / RESULTS
    if not path.is_file():
        return {}
    tasks = json.loads(path.read_text(encoding="utf-8")).get("tasks") or {}
    return {
        f"{task}/{metric}": value
        for task, values in tasks.items()
        for metric, value in values.items()
        if metric != "seconds"  # how long, not how good: the machine's, not the model's
    }


def _cell(value) -> str:
    if value is None:
        return ""
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def write_eval_report(out_dir: Path, jobs: list[tuple[Path, str, str | None]], heading: str) -> dict[str, Path]:
    columns, rows = eval_rows(jobs)
    paths = {"markdown": out_dir / "report.md", "csv": out_dir / "report.csv"}
    atomic_write_text(heading + "\n\n" + markdown_table_text(columns, rows), paths["markdown"])
    atomic_write_text(csv_text(columns, rows), paths["csv"])
    return paths
