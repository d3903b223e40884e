"""One wrapper for every command (train.py, generate.py, export.py, report.py): user mistakes become one
line on stderr and exit code 2, whichever command and whichever stage they come from."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptlab.core.collector import exit_without_collection
from gptlab.core.errors import GptlabError, error_chain
from gptlab.core.files import as_no_space_left
from gptlab.core.rank_lines import first_to_say
from gptlab.core.redaction import guard_outputs, load_dotenv
from gptlab.core.saved_config import restore_earlier_saved_config
from gptlab.core.sweep_jobs import (
    Job,
    can_fail_alone,
    current_job,
    end_of_sweep,
    fail_job,
    job_of_this_rank,
    job_started,
    name_a_job_without_run_folder,
    remove_unused_sweep_folder,
)

if TYPE_CHECKING:
    from omegaconf import DictConfig

EXIT_USER_ERROR = 2
RUN_END_LOGGER = "gptlab"  # the logger name of the line that ended a run, in its log file


def user_error_types() -> tuple[type[BaseException], ...]:
    """GptlabError, and Lightning's MisconfigurationException once Lightning is loaded.

    Importing Lightning costs seconds; an entry point that fails before it needs Lightning need not pay them.
    """
    lightning_errors = sys.modules.get("lightning.fabric.utilities.exceptions")
    return (GptlabError, lightning_errors.MisconfigurationException) if lightning_errors else (GptlabError,)


def find_user_error(err: BaseException) -> BaseException | None:
    """The user error behind ``err``: Hydra's instantiate wraps errors raised by constructors."""
    user_errors = user_error_types()
    return next((seen for seen in error_chain(err) if isinstance(seen, user_errors)), None)


@contextmanager
def report_user_errors(job: Job | None = None) -> Iterator[None]:
    """A user error as one line and its exit code. ``job``: inside a multirun job, its name; the job then
    fails alone and the sweep goes on (gptlab.core.sweep_jobs), unless the user stopped it (a signal)."""
    try:
        yield
    except Exception as err:
        # A full disk met by a write of a library's, or a plain one (eval_results.json), is one line too.
        user_error = find_user_error(err) or as_no_space_left(err)
        if user_error is None:
            raise
        restore_earlier_saved_config()  # refused before its work began: the run folder's record as it was
        message = " ".join(str(user_error).split())  # one line, whatever the library put in it
        label, exit_code = getattr(user_error, "label", "error"), getattr(user_error, "exit_code", EXIT_USER_ERROR)
        record_in_run_log(f"{label}: {message}")
        if job is not None and exit_code == EXIT_USER_ERROR and can_fail_alone():
            raise fail_job(job, label, message) from None
        job_name = job or job_of_this_rank()
        line = f"{label}: {f'{job_name}: ' if job_name else ''}{message}"
        if first_to_say(line):  # every DDP rank may meet the same error: the line once
            print(line, file=sys.stderr, flush=True)
        sys.exit(exit_code)


def record_in_run_log(line: str) -> None:
    """The line that ended the command, in the run's log file too (Hydra's train.log), which otherwise
    stops without saying why; the console gets it once, from the caller. report.py reads it there."""
    record = logging.LogRecord(RUN_END_LOGGER, logging.ERROR, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@contextmanager
def quiet_when_the_reader_leaves() -> Iterator[None]:
    """`python generate.py ... | head`: when the reader closes the pipe, stop without a traceback, with
    the status of a Unix tool stopped by SIGPIPE (128 + 13)."""
    try:
        yield
    except BrokenPipeError:
        # Python would flush stdout again at exit and complain a second time: point it at /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)


@contextmanager
def one_line_hydra_errors(task_started: Callable[[], bool], conf_dir: Path | None = None) -> Iterator[None]:
    """Hydra's own errors (unknown option or key, bad override, run folder not writable) as one line.

    Hydra prints them over several lines, or as a traceback; it re-raises them when HYDRA_FULL_ERROR=1,
    which this sets unless the user already asked for full tracebacks. An OSError is the run folder's only
    while ``task_started()`` is False: once the task runs, its OSErrors are its own.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from gptlab.compat.hydra import (
        hydra_message,
        null_group_override,
        quiet_failed_job_returns,
        raise_hydra_errors,
    )

    wants_full_error = raise_hydra_errors()
    quiet_failed_job_returns()  # a failed job's line is printed once, ours
    try:
        yield
    except (HydraException, OmegaConfBaseException) as err:
        if wants_full_error:
            raise
        print(f"error: {hydra_message(err, conf_dir)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except GptlabError as err:  # a sweeper's own check: a task reports its errors itself (report_user_errors)
        if wants_full_error:
            raise
        print(f"{err.label}: {' '.join(str(err).split())}", file=sys.stderr, flush=True)
        sys.exit(err.exit_code)
    except ValueError as err:
        message = None if wants_full_error or task_started() else null_group_override(err, conf_dir)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    except OSError as err:
        if wants_full_error or task_started():
            raise
        where = f" {err.filename}" if err.filename else ""
        print(
            f"error: cannot create the run folder{where} ({err.strerror or err}); fix its permissions or "
            "choose another with hydra.run.dir=PATH",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(EXIT_USER_ERROR)


def command(
    config_name: str, config_path: str = "conf", reports_sweeps: bool = False
) -> Callable[[Callable[[DictConfig], Any]], Callable[[], Any]]:
    """Turn a task into a gptlab command: the same start, errors, exit codes and clean-up for every one.

        @command("train")
        def main(cfg: DictConfig) -> float | None: ...

        if __name__ == "__main__":
            main()

    Before Hydra starts: the .env file (or GPTLAB_DOTENV) is read, and Hydra's errors become one line. Inside
    the task: the config is built into its schemas (their range checks run), secrets are masked in every
    output, user mistakes become one line and exit code 2, and a
    closed pipe (``| head``) ends the command quietly. ``config_path`` is relative to the task's own file,
    as in ``hydra.main``. ``reports_sweeps``: a sweep ends with its folder and the report.py command.
    """

    def decorate(task: Callable[[DictConfig], Any]) -> Callable[[], Any]:
        import hydra

        started = False

        @functools.wraps(task)  # Hydra finds conf/ from the task's own file, through __wrapped__
        def run_task(cfg: DictConfig) -> Any:
            from gptlab.config.validate import validate_config

            nonlocal started
            started = True
            guard_outputs()  # no API key or token reaches the console or a log file
            job = current_job()
            if job is not None:
                job_started(job)
                name_a_job_without_run_folder(job)
            with report_user_errors(job), quiet_when_the_reader_leaves():
                # Every command's ranges and cross-key rules (its schema's checks), before any of its work.
                validate_config(cfg)
                return task(cfg)

        hydra_main = hydra.main(version_base="1.3", config_path=config_path, config_name=config_name)(run_task)
        conf_dir = Path(inspect.getfile(task)).parent / config_path

        @functools.wraps(task)
        def main() -> Any:
            load_dotenv(os.environ.get("GPTLAB_DOTENV", ".env"))  # its keys and tokens never reach an output
            try:
                with one_line_hydra_errors(lambda: started, conf_dir):
                    result = hydra_main()
            except Exception as err:
                end_of_sweep(err, reports_sweeps)  # exits 2 when the sweep ended on its failed jobs
                raise
            else:
                end_of_sweep(None, reports_sweeps)
                return result
            finally:
                remove_unused_sweep_folder()
                exit_without_collection()  # ~0.8 s less at exit (gptlab.core.collector)

        return main

    return decorate
