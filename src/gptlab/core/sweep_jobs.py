"""A multirun job that fails with a user error fails alone: the sweep goes on to its next job.

Hydra records a job whose task raises an exception as failed and launches the next one; the basic sweeper
raises the first failure once every job has run, and the Optuna sweeper marks the trial failed (and goes
on up to its ``max_failure_rate``). A command that *exits* on a user error (SystemExit is no Exception)
ended the whole sweep instead: one diverging learning rate stopped a sweep before its other jobs ran.
So inside a multirun job a user error is printed with the job's number and overrides and raised as
:class:`SweepJobFailed`; the command exits 2 after the sweep, with one line naming the failed jobs.

Except a job that started rank processes of its own (DDP on one machine): Lightning watches them from a
thread that outlives the job, and when one exits with an error it kills the launching process, whichever
job that process runs by then (leaving that job's ranks behind, busy). Such a job's failure ends the
sweep, as it always did.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gptlab.core.errors import GptlabError

EXIT_USER_ERROR = GptlabError.exit_code
# The job a rank process belongs to ("job 0 (optim.lr=...)"): set for the ranks a multirun job starts.
SWEEP_JOB_ENV = "GPTLAB_SWEEP_JOB"


class SweepJobFailed(Exception):
    """A multirun job's user error, already printed; Hydra keeps it as the job's result."""


@dataclass
class _Jobs:
    """The multirun jobs this process ran (the basic and Optuna sweepers run them one after another)."""

    run: int = 0
    failed: list[str] = field(default_factory=list)
    can_fail_alone: bool = True  # the current job's; False once it started rank processes
    folder_unused: Path | None = None  # the sweep folder of a command that writes no run folder
    folder: Path | None = None  # the sweep folder (hydra.sweep.dir)


_jobs = _Jobs()


@dataclass(frozen=True)
class Job:
    num: int
    overrides: tuple[str, ...]
    sweep_dir: Path | None = None

    @property
    def name(self) -> str:
        return f"job {self.num}"

    def __str__(self) -> str:
        return f"{self.name} ({' '.join(self.overrides)})"


def job_of_this_rank() -> str | None:
    """The multirun job that started this rank process (its ranks run as single runs), else None."""
    return os.environ.get(SWEEP_JOB_ENV) or None


def current_job() -> Job | None:
    """The multirun job this process is running, else None."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra = HydraConfig.get()
    return Job(int(hydra.job.num), tuple(hydra.overrides.task), Path(hydra.sweep.dir))


def job_started(job: Job | None = None) -> None:
    _jobs.run += 1
    _jobs.can_fail_alone = True
    if job is not None and job.sweep_dir is not None:
        _jobs.folder = job.sweep_dir


def sweep_report_line() -> str | None:
    """Where a finished sweep's jobs are and the command that compares them; None where no job ran here.
    The last line of a sweep had been its last job's: nothing named the sweep's folder, or report.py."""
    if _jobs.folder is None or not _jobs.run:
        return None
    folder = shlex.quote(str(_jobs.folder))
    return f"sweep folder: {folder} ({_jobs.run} jobs); compare them: python report.py sweep_dir={folder}"


def name_a_job_without_run_folder(job: Job) -> None:
    from hydra.core.hydra_config import HydraConfig

    hydra = HydraConfig.get()
    if hydra.output_subdir is None:
        # A command that writes no run folder (conf/hydra/no_run_folder.yaml: generate.py, export.py ...):
        # Hydra's own logging is off there, so nothing said which output was which job's.
        print(f"{job}:", flush=True)
        _jobs.folder_unused = Path(hydra.sweep.dir)


def remove_unused_sweep_folder() -> None:
    """After the sweep of a command that writes no run folder: Hydra made a sweep folder anyway, with its
    multirun.yaml and an empty folder per job. Removed, with its empty parents (multirun/DATE), where it
    holds nothing else; a file the command wrote there keeps it."""
    folder = _jobs.folder_unused
    if folder is None or not folder.is_dir():
        return
    contents = [p for p in folder.iterdir() if p.name != "multirun.yaml"]
    if any(not p.is_dir() or any(p.iterdir()) for p in contents):
        return
    for job_folder in contents:
        job_folder.rmdir()
    (folder / "multirun.yaml").unlink(missing_ok=True)
    folder.rmdir()
    if len(folder.parts) >= 3 and folder.parts[-3] == "multirun":  # Hydra's default: multirun/DATE/TIME
        for parent in folder.parents[:2]:
            try:
                parent.rmdir()
            except OSError:  # not empty: other sweeps'
                return


def job_started_rank_processes() -> None:
    """Called where Lightning starts the current job's other ranks (gptlab.training.distributed)."""
    _jobs.can_fail_alone = False


def can_fail_alone() -> bool:
    return _jobs.can_fail_alone


def fail_job(job: Job, label: str, message: str) -> SweepJobFailed:
    """Print the job's error line and return the exception that fails it (the caller raises it)."""
    print(f"{label}: {job}: {message}", file=sys.stderr, flush=True)
    _jobs.failed.append(job.name)
    return SweepJobFailed(f"{job}: {message}")


def failed_jobs() -> str | None:
    """'1 of 2 jobs failed (job 0)', or None when none did."""
    if not _jobs.failed:
        return None
    return f"{len(_jobs.failed)} of {_jobs.run} jobs failed ({', '.join(_jobs.failed)}); each one's error is above"


def end_of_sweep(err: BaseException | None, reports: bool = False) -> None:
    """After Hydra's sweep: exit 2 with one line when it ended on failed jobs, a note when it finished
    with some failed (an Optuna search that allows failures). ``err``: what the sweep raised, if anything;
    an error that is no failed job's is not ours to summarise and is re-raised by the caller. ``reports``:
    a sweep that ran to its end, failed jobs or not, first prints its folder and the report.py command (the
    report lists a failed job with its error; it was left unsaid where a job failed)."""
    summary = failed_jobs()
    every_job_failed = bool(summary) and len(_jobs.failed) == _jobs.run
    ran_to_its_end = err is None or isinstance(err, SweepJobFailed) or every_job_failed
    if reports and ran_to_its_end and (report_line := sweep_report_line()):
        print(report_line, flush=True)
    if isinstance(err, SweepJobFailed):
        # None here: the jobs ran in processes of their own (a SLURM launcher), whose lines went to their
        # logs; the failure Hydra hands back is the first one.
        print(f"error: {summary or f'{err} (the first job that failed)'}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    if summary is None:
        return
    if err is None:
        print(f"note: {summary}", file=sys.stderr, flush=True)
        return
    if every_job_failed:  # the sweeper's own error about it (Optuna: "no trials are completed")
        print(f"error: {summary}; then the sweeper: {str(err).strip().splitlines()[0]}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
